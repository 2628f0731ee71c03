package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The watch fan-out (BENCH.md: "1,000 SSE watchers, 2,000 matching writes/s:
// 100 % delivered, p99 delivery ≤ 50 ms", and "≤ 150 MB RSS with 1,000 open
// watchers and a full default cache").
//
// A child process (this binary, -loadgen watch-fanout) opens the watchers on
// GET /v1/watch?pattern=fan/<run>/* — a pattern of its own, so that nothing
// else the benchmark writes reaches them — and says "ready" once every one
// has its stream open (": watching"). Then a second child (-loadgen
// watch-writer) writes open-loop: write k is due at t0 + k/rate whatever
// became of the writes before it, and carries its number, its due time and
// the time it was sent in its value ({"bench_n": k, "bench_t": due,
// "bench_s": sent}, unix ns). The writer has a
// process of its own so that it is not queued behind a thousand busy
// readers in one Go scheduler. Each watcher counts the distinct writes it
// receives and the delay from a write's sending to the moment the read
// that brought it returned (both children read the same wall clock): the
// delivery latency the target is about. The delay from the due time is
// reported beside it: there a writer that falls behind (because the
// server acknowledges writes slowly) shows as latency instead of hiding
// it, and the write rate the writer sustained says whether the server
// took the load at all. A writer that far behind stops at twice the
// duration: the writes not made by then are left out, and the rate it
// sustained is its MISS. When the writer
// has had every write acknowledged, the parent tells the watchers, who get
// until every event has arrived, or until nothing has arrived for a
// second, before they close their streams.
//
// The watchers' child reads the streams the way an event loop would rather
// than with a goroutine each: a few readers each wait on their share of the
// sockets with epoll and read whichever has data, in one read(2) with the
// time taken right after it. A goroutine per stream costs a futile read
// (EAGAIN) and a park and wake-up of its goroutine for every batch the
// server writes, which on a two-core machine shared with the server was
// CPU taken from the thing measured. Every byte still reaches the same
// parser, per watcher. (A stream the server sends chunked, and every
// stream where there is no epoll, is read by a goroutine of its own.)
//
// Meanwhile the parent samples memsync's VmRSS, after filling its cache with
// every prefilled key (1000, the default --cache-size).
//
// Everything runs on one machine: the watchers' reading competes for the
// same CPUs as the server's writing, and a latency measured here includes
// the client's delay in getting to its socket.

const (
	// fanKeys is how many keys the writes cycle over.
	fanKeys = 100
	// fanDialers bounds the watchers connecting at once.
	fanDialers = 64
	// fanQuiet ends the wait for outstanding events once none has arrived
	// for this long; fanDrainMax ends it anyway.
	fanQuiet    = time.Second
	fanDrainMax = 10 * time.Second
	// fanWriteMax: the writer stops at this many times its duration, when
	// the server acknowledges writes too slowly to keep to the schedule.
	fanWriteMax = 2
	// fanReadBuf is each epoll reader's buffer: a read takes everything a
	// stream has, whatever its backlog.
	fanReadBuf = 256 << 10
)

// writeResult is what the writer child reports, as one JSON line.
type writeResult struct {
	Scheduled    int64   `json:"scheduled"`
	Writes       int64   `json:"writes"` // made and acknowledged
	Failures     int64   `json:"failures"`
	FirstError   string  `json:"first_error,omitempty"`
	WriteSeconds float64 `json:"write_seconds"`
	MaxLagMs     float64 `json:"max_lag_ms"`
}

// fanResult is what the watchers' child reports, as one JSON line, with
// the writer's figures added by the parent.
type fanResult struct {
	Watchers       int     `json:"watchers"`
	ConnectSeconds float64 `json:"connect_seconds"` // to open every stream
	Scheduled      int64   `json:"scheduled"`       // writes due in the duration
	Writes         int64   `json:"writes"`          // made (before the writer's cutoff), all acknowledged
	WriteSeconds   float64 `json:"write_seconds"`   // from the first due time to the last acknowledgement
	MaxLagMs       float64 `json:"max_lag_ms"`      // the most a write was sent after its due time
	Expected       int64   `json:"expected"`        // watchers × writes
	Delivered      int64   `json:"delivered"`       // distinct (watcher, write) pairs received
	MinDelivered   int64   `json:"min_delivered"`   // the fewest writes one watcher received
	Complete       int     `json:"complete"`        // watchers that received every write
	Duplicates     int64   `json:"duplicates"`
	Resets         int64   `json:"resets"`
	Ended          int     `json:"ended"` // streams the server ended before the watcher closed them
	// Delivery latency from the write's sending, and from its due time.
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	P999Ms   float64 `json:"p999_ms"`
	MaxMs    float64 `json:"max_ms"`
	DueP50Ms float64 `json:"due_p50_ms"`
	DueP99Ms float64 `json:"due_p99_ms"`
	DueMaxMs float64 `json:"due_max_ms"`
	// DeliverSeconds is from the first write's due time to the arrival of
	// the last event.
	DeliverSeconds float64 `json:"deliver_seconds"`
}

// fanSample is one round of the fan-out, as the report needs it.
type fanSample struct {
	fanResult
	rssMB                  float64 // memsync's largest VmRSS during the round
	cacheEntries, cacheMax int     // memsync's cache after it was filled
}

// writeRate is the rate of writes the writer sustained.
func (f fanResult) writeRate() float64 {
	if f.WriteSeconds <= 0 {
		return 0
	}
	return float64(f.Writes) / f.WriteSeconds
}

// deliveredPct is the share of the events due that the watchers received.
func (f fanResult) deliveredPct() float64 {
	if f.Expected == 0 {
		return 0
	}
	return 100 * float64(f.Delivered) / float64(f.Expected)
}

// runFanout fills memsync's cache, opens the watchers, runs the writer
// against baseURL for d while sampling the server's (pid's) RSS, and
// returns the round and the CPU seconds the two children used.
func runFanout(baseURL string, pid int, o options, d time.Duration) (fanSample, float64, error) {
	var s fanSample
	st, err := warmCache(baseURL)
	if err != nil {
		return s, 0, err
	}
	s.cacheEntries, s.cacheMax = st.Cache.Size, st.Cache.MaxSize

	self, err := os.Executable()
	if err != nil {
		return s, 0, fmt.Errorf("find this binary to run the fan-out: %w", err)
	}
	run := "f" + strconv.FormatInt(time.Now().UnixNano(), 36)
	common := []string{"-url", baseURL, "-conns", strconv.Itoa(o.conns), "-duration", d.String(),
		"-watch-rate", strconv.Itoa(o.watchRate), "-watch-run", run}

	done := make(chan struct{})
	rss := make(chan float64, 1)
	go func() {
		var peak float64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if mb, ok := rssMB(pid); ok && mb > peak {
				peak = mb
			}
			select {
			case <-done:
				rss <- peak
				return
			case <-t.C:
			}
		}
	}()
	defer func() {
		select {
		case <-done:
		default:
			close(done)
		}
	}()

	watchers := exec.Command(self, append([]string{"-loadgen", "watch-fanout", "-watchers", strconv.Itoa(o.watchers)}, common...)...)
	var werr bytes.Buffer
	watchers.Stderr = &werr
	stdin, err := watchers.StdinPipe()
	if err != nil {
		return s, 0, err
	}
	out, err := watchers.StdoutPipe()
	if err != nil {
		return s, 0, err
	}
	if err := watchers.Start(); err != nil {
		return s, 0, fmt.Errorf("fan-out watchers: %w", err)
	}
	fail := func(err error) (fanSample, float64, error) {
		stdin.Close() // the child gives up
		_ = watchers.Wait()
		return s, 0, fmt.Errorf("fan-out: %w\n%s", err, werr.Bytes())
	}
	br := bufio.NewReader(out)
	if line, err := br.ReadString('\n'); err != nil || line != "ready\n" {
		return fail(fmt.Errorf("the watchers did not open: %q %v", line, err))
	}

	writer := exec.Command(self, append([]string{"-loadgen", "watch-writer"}, common...)...)
	var wout, wstderr bytes.Buffer
	writer.Stdout, writer.Stderr = &wout, &wstderr
	if err := writer.Run(); err != nil {
		return fail(fmt.Errorf("writer: %w\n%s", err, wstderr.Bytes()))
	}
	var wr writeResult
	if err := json.Unmarshal(wout.Bytes(), &wr); err != nil {
		return fail(fmt.Errorf("writer: bad report %q: %w", wout.Bytes(), err))
	}
	if wr.Failures > 0 {
		return fail(fmt.Errorf("%d of %d writes failed; first: %s", wr.Failures, wr.Writes+wr.Failures, wr.FirstError))
	}

	if _, err := fmt.Fprintf(stdin, "written %d\n", wr.Writes); err != nil {
		return fail(err)
	}
	stdin.Close()
	report, _ := io.ReadAll(br)
	if err := watchers.Wait(); err != nil {
		return s, 0, fmt.Errorf("fan-out watchers: %w\n%s", err, werr.Bytes())
	}
	close(done)
	s.rssMB = <-rss
	if err := json.Unmarshal(report, &s.fanResult); err != nil {
		return s, 0, fmt.Errorf("fan-out watchers: bad report %q: %w", report, err)
	}
	s.Scheduled, s.WriteSeconds, s.MaxLagMs = wr.Scheduled, wr.WriteSeconds, wr.MaxLagMs
	return s, processCPU(watchers) + processCPU(writer), nil
}

// rssMB is VmRSS of process pid in MB (10^6 bytes).
func rssMB(pid int) (float64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "123456 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseFloat(f[0], 64)
				return kb * 1024 / 1e6, err == nil
			}
		}
	}
	return 0, false
}

// memsyncStats is the part of GET /v1/stats the benchmark reads.
type memsyncStats struct {
	CacheHits   uint64 `json:"cacheHits"`
	CacheMisses uint64 `json:"cacheMisses"`
	Cache       struct {
		Size    int `json:"size"`
		MaxSize int `json:"maxSize"`
	} `json:"cache"`
}

func fetchStats(baseURL string) (memsyncStats, error) {
	var st memsyncStats
	resp, err := http.Get(baseURL + "/v1/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return st, fmt.Errorf("GET /v1/stats: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("GET /v1/stats: %w", err)
	}
	return st, nil
}

// warmCache reads every prefilled key once through memsync's cache (no
// ?consistent), so that the cache holds them all, and returns the stats
// after. The cache must have room for every key.
func warmCache(baseURL string) (memsyncStats, error) {
	c, err := dial(strings.TrimPrefix(baseURL, "http://"))
	if err != nil {
		return memsyncStats{}, err
	}
	defer c.close()
	get := armByName("memsync-get-cached")
	for i := range keySpace {
		if err := c.expect(200, "GET", get.path(i), nil, ""); err != nil {
			return memsyncStats{}, fmt.Errorf("fill the cache: %w", err)
		}
	}
	st, err := fetchStats(baseURL)
	if err != nil {
		return st, err
	}
	if st.Cache.MaxSize < keySpace {
		return st, fmt.Errorf("memsync's cache holds %d entries, fewer than the %d keys read: raise --cache-size", st.Cache.MaxSize, keySpace)
	}
	return st, nil
}

// fanWrites is how many writes a fan-out of d at rate makes.
func fanWrites(rate int, d time.Duration) int { return int(float64(rate) * d.Seconds()) }

// fanoutMain is the watchers' child: it opens nw watchers on the run's
// pattern, prints "ready", and reads them until a line on stdin says the
// writer is done and how many writes it made ("written N"; EOF: give up);
// then it waits for the events still on their way and prints a fanResult.
func fanoutMain(baseURL, run string, nw, rate int, d time.Duration, stdout io.Writer) error {
	if nw < 1 || rate < 1 || run == "" {
		return errors.New("-watchers, -watch-rate and -watch-run must be set")
	}
	host := strings.TrimPrefix(baseURL, "http://")
	total := fanWrites(rate, d)
	res := fanResult{Watchers: nw}

	// Open every stream.
	start := time.Now()
	ws := make([]*watcher, nw)
	var closing atomic.Bool
	closeAll := func() {
		closing.Store(true)
		for _, w := range ws {
			if w != nil && w.conn != nil {
				w.conn.Close()
			}
		}
	}
	var readers sync.WaitGroup
	var loops []*readLoop
	defer func() {
		closing.Store(true)
		readers.Wait()
		for _, l := range loops {
			l.close()
		}
	}()
	var wg sync.WaitGroup
	sem := make(chan struct{}, fanDialers)
	errs := make(chan error, nw)
	path := "/v1/watch?pattern=fan/" + run + "/*"
	for i := range ws {
		w := &watcher{seen: make([]uint64, (total+63)/64), total: total, fd: -1, lat: new(latencies)}
		ws[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := w.open(host, path); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		closeAll()
		return fmt.Errorf("open a watcher: %w", err)
	}
	res.ConnectSeconds = time.Since(start).Seconds()

	var delivered atomic.Int64
	for range fanReaders() {
		l, err := newReadLoop()
		if err != nil {
			closeAll()
			return err
		}
		loops = append(loops, l)
	}
	for i, w := range ws {
		if w.raw {
			if err := loops[i%len(loops)].add(w); err != nil {
				closeAll()
				return err
			}
			continue
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			w.read(&delivered, &closing)
		}()
	}
	for _, l := range loops {
		readers.Add(1)
		go func() {
			defer readers.Done()
			l.run(&delivered, &closing)
		}()
	}
	if _, err := io.WriteString(stdout, "ready\n"); err != nil {
		closeAll()
		return err
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if _, serr := fmt.Sscanf(line, "written %d\n", &res.Writes); err != nil || serr != nil || res.Writes > int64(total) {
		closeAll()
		return fmt.Errorf("no word from the writer: %q %v", line, err)
	}
	writeEnd := time.Now()

	// Wait for the events still on their way. A write not made was not
	// received either: what the watchers count is exactly what was made.
	res.Expected = int64(nw) * res.Writes
	last, lastChange := delivered.Load(), time.Now()
	for {
		n := delivered.Load()
		if n >= res.Expected || time.Since(writeEnd) > fanDrainMax {
			break
		}
		if n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) > fanQuiet {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	closeAll()
	readers.Wait()

	var h, hd histogram
	merged := map[*latencies]bool{}
	res.MinDelivered = res.Writes
	var maxNs, maxDueNs, firstDue, lastNs int64
	for _, w := range ws {
		if w.firstDue != 0 && (firstDue == 0 || w.firstDue < firstDue) {
			firstDue = w.firstDue
		}
		lastNs = max(lastNs, w.lastNs)
		res.Delivered += w.count
		res.MinDelivered = min(res.MinDelivered, w.count)
		if w.count == res.Writes {
			res.Complete++
		}
		res.Duplicates += w.dups
		res.Resets += w.resets
		if w.ended {
			res.Ended++
		}
		if !merged[w.lat] {
			merged[w.lat] = true
			h.merge(&w.lat.send)
			hd.merge(&w.lat.due)
		}
		maxNs = max(maxNs, w.maxNs)
		maxDueNs = max(maxDueNs, w.maxDueNs)
	}
	res.P50Ms, res.P99Ms, res.P999Ms = h.quantile(0.50)/1e3, h.quantile(0.99)/1e3, h.quantile(0.999)/1e3
	res.MaxMs = float64(maxNs) / 1e6
	res.DueP50Ms, res.DueP99Ms = hd.quantile(0.50)/1e3, hd.quantile(0.99)/1e3
	res.DueMaxMs = float64(maxDueNs) / 1e6
	if firstDue > 0 {
		res.DeliverSeconds = float64(lastNs-firstDue) / 1e9
	}
	return json.NewEncoder(stdout).Encode(res)
}

// writerMain is the writer's child: fanWrites(rate, d) PUTs to the run's
// keys, open loop over conns connections, but none after fanWriteMax × d;
// it prints a writeResult.
func writerMain(baseURL, run string, rate, conns int, d time.Duration, stdout io.Writer) error {
	if rate < 1 || run == "" {
		return errors.New("-watch-rate and -watch-run must be set")
	}
	host := strings.TrimPrefix(baseURL, "http://")
	total := fanWrites(rate, d)
	writers := make([]*client, conns)
	for i := range writers {
		c, err := dial(host)
		if err != nil {
			return err
		}
		defer c.close()
		writers[i] = c
	}
	paths := make([]string, fanKeys)
	for i := range paths {
		paths[i] = "/v1/kv/fan/" + run + "/k" + strconv.Itoa(i)
	}
	due := make(chan int, total)
	t0 := time.Now().Add(20 * time.Millisecond).UnixNano()
	dueAt := func(k int) int64 { return t0 + int64(k)*int64(time.Second)/int64(rate) }
	cutoff := t0 + fanWriteMax*int64(d)
	var (
		mu  sync.Mutex
		res = writeResult{Scheduled: int64(total)}
		wg  sync.WaitGroup
	)
	var maxLag int64
	for _, c := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lag, fails, made int64
			var first error
			body := make([]byte, 0, 96)
			for k := range due {
				at, sent := dueAt(k), time.Now().UnixNano()
				if sent > cutoff {
					continue // too late: not made
				}
				lag = max(lag, sent-at)
				body = append(body[:0], `{"value":{"bench_n":`...)
				body = strconv.AppendInt(body, int64(k), 10)
				body = append(body, `,"bench_t":`...)
				body = strconv.AppendInt(body, at, 10)
				body = append(body, `,"bench_s":`...)
				body = strconv.AppendInt(body, sent, 10)
				body = append(body, `}}`...)
				err := c.expect(200, "PUT", paths[k%fanKeys], nil, string(body))
				if err == nil {
					made++
				} else {
					fails++
					if first == nil {
						first = err
					}
					c.close()
					if c.redial() != nil {
						break
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			maxLag = max(maxLag, lag)
			res.Writes += made
			res.Failures += fails
			if first != nil && res.FirstError == "" {
				res.FirstError = first.Error()
			}
		}()
	}
	for next := 0; next < total; {
		now := time.Now().UnixNano()
		if now > cutoff {
			break
		}
		if now >= t0 {
			upto := min(total, int((now-t0)*int64(rate)/int64(time.Second))+1)
			for ; next < upto; next++ {
				due <- next
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	close(due)
	wg.Wait()
	res.WriteSeconds = float64(time.Now().UnixNano()-t0) / 1e9
	res.MaxLagMs = float64(maxLag) / 1e6
	return json.NewEncoder(stdout).Encode(res)
}

// watcher is one SSE stream and what it received. Only its reading
// goroutine touches it until that has returned.
type watcher struct {
	conn   net.Conn
	body   io.Reader // the de-chunked event stream
	carry  []byte    // a line not yet complete
	opened bool      // ": watching" seen
	// raw: the stream is not chunked, and its socket was taken over by
	// an epoll reader (readLoop) as fd; conn is nil then.
	raw bool
	fd  int

	total  int
	seen   []uint64 // bit k: write k received
	count  int64    // distinct writes received
	dups   int64
	resets int64
	ended  bool // the stream ended while the watcher still read it
	// Latency from sending and from the due time: the largest, and
	// histograms, the watcher's own or its reader's (shared by the
	// watchers it reads, and so kept in the CPU's cache).
	maxNs, maxDueNs int64
	lat             *latencies
	// firstDue is the earliest due time received, lastNs when the last new
	// write arrived: the span of the delivery.
	firstDue, lastNs int64
}

// open connects and reads until the stream says it is open: from then on
// the watcher is registered and receives every matching event.
func (w *watcher) open(host, path string) error {
	conn, err := net.DialTimeout("tcp", host, requestTimeout)
	if err != nil {
		return err
	}
	w.conn = conn
	if err := conn.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		return err
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nAccept: text/event-stream\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return err
	}
	br := bufio.NewReaderSize(conn, 32<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("GET %s: status %d: %s", path, resp.StatusCode, b)
	}
	w.body = resp.Body
	buf := make([]byte, 4096)
	for !w.opened {
		n, err := w.body.Read(buf)
		w.feed(buf[:n], time.Now().UnixNano())
		if err != nil && !w.opened {
			return fmt.Errorf("GET %s: the stream ended before it opened: %v", path, err)
		}
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return err
	}
	if len(resp.TransferEncoding) > 0 || fanReaders() == 0 {
		return nil // chunked, or no epoll: read resp.Body with a goroutine
	}
	// The rest of the stream comes straight from the socket: take over a
	// duplicate of it, after what the response's reader holds already.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		w.feed(b, time.Now().UnixNano())
	}
	return w.takeOver()
}

// read consumes the stream until it ends, adding the writes it receives to
// delivered.
func (w *watcher) read(delivered *atomic.Int64, closing *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := w.body.Read(buf)
		if n > 0 {
			// One clock reading per read: every event in it arrived then.
			if got := w.feed(buf[:n], time.Now().UnixNano()); got > 0 {
				delivered.Add(got)
			}
		}
		if err != nil {
			w.ended = !closing.Load()
			return
		}
	}
}

// feed processes the complete lines of p (and the carried start of the
// first), and returns how many new writes they brought.
func (w *watcher) feed(p []byte, now int64) (got int64) {
	for len(p) > 0 {
		if len(w.carry) == 0 {
			// The lines the count ignores, skipped without a search: the
			// blank line ending an event, "id: <digits>", "event: put".
			switch {
			case p[0] == '\n':
				p = p[1:]
				continue
			case len(p) > 4 && p[0] == 'i' && p[1] == 'd' && p[2] == ':' && p[3] == ' ':
				j := 4
				for j < len(p) && p[j] >= '0' && p[j] <= '9' {
					j++
				}
				if j < len(p) && p[j] == '\n' {
					p = p[j+1:]
					continue
				}
			case len(p) >= len(ssePut) && string(p[:len(ssePut)]) == ssePut:
				p = p[len(ssePut):]
				continue
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.carry = append(w.carry, p...)
			return got
		}
		line := p[:i]
		if len(w.carry) > 0 {
			w.carry = append(w.carry, line...)
			line = w.carry
		}
		got += w.line(line, now)
		w.carry = w.carry[:0]
		p = p[i+1:]
	}
	return got
}

const ssePut = "event: put\n"

var (
	sseData    = []byte("data: ")
	sseReset   = []byte("event: reset")
	sseOpen    = []byte(": watching")
	fieldN     = []byte(`"bench_n":`)
	fieldT     = []byte(`"bench_t":`)
	fieldS     = []byte(`"bench_s":`)
	errNoField = errors.New("no field")
)

// line handles one line of the stream; id and other event lines carry
// nothing the count needs (the data line has the write's number).
func (w *watcher) line(line []byte, now int64) int64 {
	if len(line) == 0 {
		return 0
	}
	switch {
	case line[0] == 'd' && bytes.HasPrefix(line, sseData):
		k, at, sent, ok := benchFields(line)
		if !ok || k < 0 || k >= int64(w.total) {
			return 0 // a reset's data
		}
		word, bit := k/64, uint64(1)<<(k%64)
		if w.seen[word]&bit != 0 {
			w.dups++
			return 0
		}
		w.seen[word] |= bit
		w.count++
		w.lastNs = now
		if w.firstDue == 0 || at < w.firstDue {
			w.firstDue = at
		}
		lat, latDue := max(now-sent, 0), max(now-at, 0)
		w.maxNs, w.maxDueNs = max(w.maxNs, lat), max(w.maxDueNs, latDue)
		w.lat.send.add(lat / 1e3)
		w.lat.due.add(latDue / 1e3)
		return 1
	case line[0] == 'e' && bytes.Equal(line, sseReset):
		w.resets++
	case line[0] == ':' && bytes.Equal(line, sseOpen):
		w.opened = true
	}
	return 0
}

// benchFields finds the write's number, due time and sending time in an
// event's data line. Events end with their value, so the fields are read
// from the end ({"bench_n":K,"bench_t":T,"bench_s":S}}), which is much
// cheaper than searching the line for them; a search is the fallback.
func benchFields(line []byte) (k, due, sent int64, ok bool) {
	if k, due, sent, ok = benchFieldsExact(line); ok {
		return k, due, sent, true
	}
	b := line
	for len(b) > 0 && b[len(b)-1] == '}' {
		b = b[:len(b)-1]
	}
	var xs [3]int64
	ok = true
	for i, name := range [][]byte{fieldS, fieldT, fieldN} {
		if i > 0 {
			if len(b) == 0 || b[len(b)-1] != ',' {
				ok = false
				break
			}
			b = b[:len(b)-1]
		}
		var v int64
		if v, b, ok = tailInt(b); !ok || !bytes.HasSuffix(b, name) {
			ok = false
			break
		}
		b = b[:len(b)-len(name)]
		xs[2-i] = v
	}
	if ok {
		return xs[0], xs[1], xs[2], true
	}
	var err [3]error
	k, err[0] = intField(line, fieldN)
	due, err[1] = intField(line, fieldT)
	sent, err[2] = intField(line, fieldS)
	return k, due, sent, err == [3]error{}
}

// benchFieldsExact reads the fields where the writer puts them, with both
// times of 19 digits (unix ns from 2001 to 2286): the line ends
// `"bench_n":K,"bench_t":T,"bench_s":S}}`. Every event of a run takes this
// path, at a fraction of the cost of the general one.
func benchFieldsExact(line []byte) (k, due, sent int64, ok bool) {
	const (
		nameN, nameT, nameS = `"bench_n":`, `,"bench_t":`, `,"bench_s":`
		tail                = len(nameT) + 19 + len(nameS) + 19 + len("}}")
	)
	n := len(line)
	if n < len(nameN)+1+tail || line[n-1] != '}' || line[n-2] != '}' {
		return 0, 0, 0, false
	}
	b := line[:n-2]
	s, t := b[len(b)-19:], b[len(b)-19-len(nameS)-19:len(b)-19-len(nameS)]
	if string(b[len(b)-19-len(nameS):len(b)-19]) != nameS || string(b[len(b)-tail+2:len(b)-tail+2+len(nameT)]) != nameT {
		return 0, 0, 0, false
	}
	sv, ok1 := digits19(s)
	tv, ok2 := digits19(t)
	b = b[:len(b)-tail+2]
	j := len(b)
	for j > 0 && len(b)-j < 18 && b[j-1] >= '0' && b[j-1] <= '9' {
		j--
	}
	if !ok1 || !ok2 || j == len(b) || j < len(nameN) || string(b[j-len(nameN):j]) != nameN {
		return 0, 0, 0, false
	}
	for _, c := range b[j:] {
		k = k*10 + int64(c-'0')
	}
	return k, int64(tv), int64(sv), true
}

// tailInt reads the decimal number at the end of b. Times in unix ns have
// 19 digits: those take a fast path, eight digits at a time.
func tailInt(b []byte) (v int64, rest []byte, ok bool) {
	if n := len(b); n > 19 && (b[n-20] < '0' || b[n-20] > '9') {
		if x, ok := digits19(b[n-19:]); ok {
			return int64(x), b[:n-19], true
		}
	}
	j := len(b)
	for j > 0 && b[j-1] >= '0' && b[j-1] <= '9' {
		j--
	}
	switch n := len(b) - j; {
	case n == 19:
		x, ok := digits19(b[j:])
		return int64(x), b[:j], ok
	case n == 0 || n > 19: // int64 holds any 18 digits
		return 0, b, false
	}
	for _, c := range b[j:] {
		v = v*10 + int64(c-'0')
	}
	return v, b[:j], true
}

// digits19 is the value of 19 decimal digits, or false if b holds anything
// else or a value beyond int64.
func digits19(b []byte) (uint64, bool) {
	hi := uint64(b[0]-'0')*100 + uint64(b[1]-'0')*10 + uint64(b[2]-'0')
	if b[0]-'0' > 9 || b[1]-'0' > 9 || b[2]-'0' > 9 || hi > 922 {
		return 0, false
	}
	m, ok1 := digits8(b[3:11])
	l, ok2 := digits8(b[11:19])
	v := hi*1e16 + m*1e8 + l
	return v, ok1 && ok2 && v <= math.MaxInt64
}

// digits8 is the value of 8 decimal digits (SWAR: pairs, then quads, then
// the whole, in one 64-bit word), or false if b holds anything else.
func digits8(b []byte) (uint64, bool) {
	x := binary.LittleEndian.Uint64(b)
	// Every byte in '0'..'9': its high nibble is 3, and still is with 6
	// added (a byte that fails the first test may carry into the next one
	// in the second, but has failed already).
	if x&0xf0f0f0f0f0f0f0f0|(x+0x0606060606060606)&0xf0f0f0f0f0f0f0f0>>4 != 0x3333333333333333 {
		return 0, false
	}
	x -= 0x3030303030303030
	x = (x*10 + x>>8) & 0x00ff00ff00ff00ff
	x = (x*100 + x>>16) & 0x0000ffff0000ffff
	x = (x*10000 + x>>32) & 0xffffffff
	return x, true
}

// intField finds "name":<digits> in line.
func intField(line, name []byte) (int64, error) {
	i := bytes.Index(line, name)
	if i < 0 {
		return 0, errNoField
	}
	rest := line[i+len(name):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	return strconv.ParseInt(string(rest[:j]), 10, 64)
}

// Latency histograms: log-linear over microseconds, histSub buckets per
// power of two (±0.8 %), exact below histSub µs, up to 2^38 µs.
const (
	histSub = 64
	histLen = histSub * 32
)

// smallHistogram is one watcher's or one reader's; histogram is the sum of
// all of them.
type (
	smallHistogram [histLen]uint32
	histogram      [histLen]uint64
)

// latencies are the delays from sending and from the due time.
type latencies struct{ send, due smallHistogram }

func histIndex(us int64) int {
	if us < histSub {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 7 // us>>e is in [64, 128)
	i := histSub + e*histSub + int(us>>e) - histSub
	return min(i, histLen-1)
}

// histMid is the middle of bucket i, in µs.
func histMid(i int) float64 {
	if i < histSub {
		return float64(i)
	}
	e := (i - histSub) / histSub
	m := histSub + (i-histSub)%histSub
	return (float64(m) + 0.5) * math.Exp2(float64(e))
}

func (h *smallHistogram) add(us int64) { h[histIndex(us)]++ }

func (h *histogram) merge(s *smallHistogram) {
	for i, n := range s {
		h[i] += uint64(n)
	}
}

// quantile is the q-quantile in µs; 0 when empty.
func (h *histogram) quantile(q float64) float64 {
	var total uint64
	for _, n := range h {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, n := range h {
		seen += n
		if seen >= rank && n > 0 {
			return histMid(i)
		}
	}
	return histMid(histLen - 1)
}
