package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The Go load generator: a closed loop of one connection per worker, each
// sending its next operation as soon as the last one is answered, like
// wrk -c. It runs in a child process (this binary, with -loadgen), never in
// the process that serves the baselines: in-process, the baselines would
// share a scheduler and a garbage collector with their load while memsync
// would not, and the comparison would be unfair in a way nobody could see.

// requestTimeout bounds one request; a stuck server fails the run instead
// of hanging it.
const requestTimeout = 10 * time.Second

// genResult is what a generator run reports, as one JSON line.
type genResult struct {
	Ops        int64   `json:"ops"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
}

// runGoLoad runs the generator for a in a child process and returns the
// operations per second and the CPU seconds the generator used.
func runGoLoad(a *arm, baseURL string, conns int, d time.Duration) (rate, cpu float64, err error) {
	self, err := os.Executable()
	if err != nil {
		return 0, 0, fmt.Errorf("find this binary to run the Go generator: %w", err)
	}
	cmd := exec.Command(self, "-loadgen", a.name, "-url", baseURL,
		"-conns", strconv.Itoa(conns), "-duration", d.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("go generator for %s: %w\n%s", a.name, err, stderr.Bytes())
	}
	var r genResult
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, 0, fmt.Errorf("go generator for %s: bad report %q: %w", a.name, out, err)
	}
	if r.Errors > 0 {
		return 0, 0, fmt.Errorf("%s: %d of %d operations failed; first: %s", a.name, r.Errors, r.Ops+r.Errors, r.FirstError)
	}
	if r.Ops == 0 || r.Seconds <= 0 {
		return 0, 0, fmt.Errorf("%s: no operation completed", a.name)
	}
	return float64(r.Ops) / r.Seconds, processCPU(cmd), nil
}

// loadgenMain is the child process: it loads baseURL with arm name's
// operations from conns connections for d and prints a genResult.
func loadgenMain(name, baseURL string, conns int, d time.Duration, stdout io.Writer) error {
	a := armByName(name)
	if a == nil {
		return fmt.Errorf("unknown arm %q", name)
	}
	host, _ := strings.CutPrefix(baseURL, "http://")
	// Every request, built before the clock starts.
	n := a.cycle()
	paths, bodies := make([]string, n), make([]string, n)
	for i := range n {
		paths[i], bodies[i] = a.path(i), a.bodyFor(i)
	}
	clients := make([]*client, conns)
	for w := range clients {
		c, err := dial(host)
		if err != nil {
			return err
		}
		defer c.close()
		clients[w] = c
	}

	var (
		mu    sync.Mutex
		total genResult
		wg    sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for w, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ops, errs int64
			var first error
			// Workers start at different keys so that they do not all
			// address the same key at the same moment.
			i := w * n / conns
			for time.Now().Before(deadline) {
				var err error
				if a.op != nil {
					err = a.op(c, w)
				} else {
					err = c.expect(0, a.method, paths[i%n], nil, bodies[i%n])
					if err == nil && a.check != nil {
						err = a.check(c.body.Bytes())
					}
					i++
				}
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
					// The connection may be broken; the next op needs a
					// fresh one.
					c.close()
					if err := c.redial(); err != nil {
						break
					}
					continue
				}
				ops++
			}
			mu.Lock()
			defer mu.Unlock()
			total.Ops += ops
			total.Errors += errs
			if first != nil && total.FirstError == "" {
				total.FirstError = first.Error()
			}
		}()
	}
	wg.Wait()
	total.Seconds = time.Since(start).Seconds()
	return json.NewEncoder(stdout).Encode(total)
}

// client is a minimal HTTP/1.1 client on one kept-alive connection.
// net/http's Transport would do, but it runs two goroutines per connection
// and allocates a request per call; wrk does neither, and the generator's
// cost comes out of the CPUs the servers under test also need.
type client struct {
	host string
	conn net.Conn
	br   *bufio.Reader
	req  []byte
	body bytes.Buffer
}

func dial(host string) (*client, error) {
	c := &client{host: host}
	return c, c.redial()
}

func (c *client) redial() error {
	conn, err := net.DialTimeout("tcp", c.host, requestTimeout)
	if err != nil {
		return fmt.Errorf("dial %s: %w", c.host, err)
	}
	c.conn = conn
	c.br = bufio.NewReaderSize(conn, 16<<10)
	return nil
}

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// do sends one request and reads the whole response. header is a list of
// name, value pairs. The returned body is valid until the next call.
func (c *client) do(method, path string, header []string, body string) (int, []byte, error) {
	b := c.req[:0]
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, c.host...)
	b = append(b, "\r\n"...)
	if body != "" {
		b = append(b, "Content-Type: application/json\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	}
	for i := 0; i+1 < len(header); i += 2 {
		b = append(b, header[i]...)
		b = append(b, ": "...)
		b = append(b, header[i+1]...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, body...)
	c.req = b

	if err := c.conn.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		return 0, nil, err
	}
	if _, err := c.conn.Write(b); err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	c.body.Reset()
	_, err = c.body.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: reading the body: %w", method, path, err)
	}
	return resp.StatusCode, c.body.Bytes(), nil
}

// expect sends a request and fails unless the status is want, or any 2xx
// when want is 0.
func (c *client) expect(want int, method, path string, header []string, body string) error {
	status, resp, err := c.do(method, path, header, body)
	if err != nil {
		return err
	}
	if status == want || (want == 0 && status/100 == 2) {
		return nil
	}
	return fmt.Errorf("%s %s: status %d: %.200s", method, path, status, resp)
}
