package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/redis/go-redis/v9"
)

// startTimeout bounds how long redis-server and memsync may take to answer.
const startTimeout = 15 * time.Second

// proc is a child process that must not outlive the benchmark.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // where its output goes
	done chan struct{}
}

func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to shut down (SIGTERM), and kills it if it has not
// within the graceful shutdown memsync allows itself plus a margin.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(12 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// failure describes a process that did not come up, with its log's tail.
func (p *proc) failure(err error) error {
	log, _ := os.ReadFile(p.log)
	if len(log) > 2000 {
		log = log[len(log)-2000:]
	}
	state := "still running"
	if p.exited() {
		state = p.cmd.ProcessState.String()
	}
	return fmt.Errorf("%s did not come up (%s): %w\n--- %s:\n%s", p.name, state, err, p.log, log)
}

// startRedis starts redis-server on a free loopback port without
// persistence (--save "" --appendonly no), with extra arguments after
// those, and waits until it answers.
func startRedis(dir string, extra []string) (*proc, string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, "", errors.New("redis-server is not installed (apt-get install redis-server): the benchmark measures memsync on a real Redis")
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"}, extra...)
	p, err := startProc("redis-server", filepath.Join(dir, "redis.log"), os.Environ(), bin, args...)
	if err != nil {
		return nil, "", err
	}
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	err = waitUntil(p, func(ctx context.Context) error { return c.Ping(ctx).Err() })
	if err != nil {
		p.stop()
		return nil, "", p.failure(err)
	}
	return p, addr, nil
}

// buildMemsync builds ./cmd/server of the module this benchmark belongs to
// into dir, with the -overlay file when not empty, and returns the binary.
func buildMemsync(dir, name, overlay string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	args := []string{"build", "-o", bin}
	if overlay != "" {
		args = append(args, "-overlay", overlay)
	}
	args = append(args, "./cmd/server")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), root, err, out)
	}
	return bin, nil
}

// moduleRoot is the directory of the memsync module: go run and go build
// resolve ./cmd/server from there, whatever directory make was run in.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the benchmark inside the memsync module (go run ./cmd/bench), or pass -memsync-bin")
	}
	return filepath.Dir(gomod), nil
}

// startMemsync runs the memsync binary as deployed, on a free port over the
// benchmark's Redis, and waits for /healthz. extraEnv is added to an
// environment cleared of memsync's own variables, so that the benchmark
// measures the defaults whatever the caller's shell exports.
func startMemsync(bin, redisAddr, dir string, extraEnv ...string) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MEMSYNC_") && !strings.HasPrefix(kv, "REDIS_URL=") {
			env = append(env, kv)
		}
	}
	env = append(env, extraEnv...)
	p, err := startProc("memsync", filepath.Join(dir, "memsync-"+strconv.Itoa(port)+".log"), env, bin,
		"--addr", addr, "--redis-url", "redis://"+redisAddr, "--log-level", "warn")
	if err != nil {
		return nil, "", err
	}
	url := "http://" + addr
	err = waitUntil(p, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", url+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("/healthz: status %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		p.stop()
		return nil, "", p.failure(err)
	}
	return p, url, nil
}

// waitUntil retries ready until it succeeds, p exits or startTimeout passes.
func waitUntil(p *proc, ready func(context.Context) error) error {
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := ready(ctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case p.exited():
			return errors.New("it exited")
		case time.Now().After(deadline):
			return fmt.Errorf("no answer within %v: %w", startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before ours binds it; that race is rare enough for a benchmark,
// and shows as a clear start-up failure.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// The baselines. Each is its own minimal chi router on its own port, with
// its own go-redis client on default options (memsync's pool is the
// default size too), and does exactly what its name says: no validation,
// no clocks, no metrics. They serve with the http.Server settings memsync
// uses.

// naivePrefix keeps the naive arms' Redis keys apart from memsync's.
const naivePrefix = "naive:"

// ceilingBody is the constant the ceiling writes: as small as memsync's
// smallest JSON answer.
var ceilingBody = []byte(`{"status":"ok"}`)

// startBaselines serves the baselines on free loopback ports, in this
// process (which does nothing else while they are measured), and returns
// their base URLs by server name and a function that stops them.
func startBaselines(redisAddr string) (map[string]string, func(), error) {
	var clients []*redis.Client
	rdb := func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: redisAddr})
		clients = append(clients, c)
		return c
	}
	routers := map[string]func(chi.Router){
		srvCeiling: func(r chi.Router) {
			r.Get("/*", func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(ceilingBody)
			})
		},
		srvNaiveGet: func(r chi.Router) {
			c := rdb()
			r.Get("/kv/*", func(w http.ResponseWriter, r *http.Request) {
				v, err := c.Get(r.Context(), naivePrefix+chi.URLParam(r, "*")).Bytes()
				if err != nil {
					http.Error(w, err.Error(), http.StatusNotFound)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(v)
			})
		},
		srvNaiveSet: func(r chi.Router) {
			c := rdb()
			r.Put("/kv/*", func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(r.Body)
				if err == nil {
					err = c.Set(r.Context(), naivePrefix+chi.URLParam(r, "*"), body, 0).Err()
				}
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				w.WriteHeader(http.StatusNoContent)
			})
			// The counter's baseline: one INCRBY, its value answered.
			r.Post("/incr/*", func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				n, err := c.IncrBy(r.Context(), naivePrefix+"incr:"+chi.URLParam(r, "*"), 1).Result()
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = fmt.Fprintf(w, `{"value":%d}`, n)
			})
		},
		srvNaiveLock: func(r chi.Router) {
			c := rdb()
			r.Post("/lock/*", func(w http.ResponseWriter, r *http.Request) {
				key := naivePrefix + "lock:" + chi.URLParam(r, "*")
				// Literally SET NX PX: go-redis's SetNX would send EX for
				// whole seconds.
				err := c.Do(r.Context(), "set", key, "0123456789abcdef0123456789abcdef", "nx", "px", 5000).Err()
				if err == nil {
					err = c.Del(r.Context(), key).Err()
				}
				if err != nil { // redis.Nil: held, which one connection per name never sees
					http.Error(w, err.Error(), http.StatusConflict)
					return
				}
				w.WriteHeader(http.StatusNoContent)
			})
		},
	}
	var servers []*http.Server
	stop := func() {
		for _, s := range servers {
			_ = s.Close()
		}
		for _, c := range clients {
			_ = c.Close()
		}
	}
	urls := make(map[string]string)
	for name, route := range routers {
		r := chi.NewRouter()
		route(r)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("listen for the %s baseline: %w", name, err)
		}
		s := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
		servers = append(servers, s)
		go func() { _ = s.Serve(ln) }()
		urls[name] = "http://" + ln.Addr().String()
	}
	return urls, stop, nil
}
