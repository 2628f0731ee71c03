// Package redistest starts the Redis servers that tests run against: an
// in-process miniredis and a real redis-server process on a free port.
//
// Every store and lock behaviour is tested on both, because miniredis's Lua
// (gopher-lua) and real Redis's Lua differ at the edges. When no redis-server
// binary is installed the real-Redis half is skipped with a printed reason,
// unless MEMSYNC_REQUIRE_REDIS=1, which turns the skip into a failure (CI sets
// it).
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

func init() {
	// go-redis logs every failed dial; the tests that stop Redis on purpose
	// would drown the output.
	redis.SetLogger(quiet{})
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// Backend is one Redis a test body runs against.
type Backend struct {
	// Name is "miniredis" or "redis-server"; it names the subtest.
	Name string
	// Client is connected to the backend and closed when the test ends.
	Client *redis.Client
	// Mini is the miniredis instance, nil for a real redis-server.
	Mini *miniredis.Miniredis
	// Real is the redis-server process, nil for miniredis.
	Real *Server
}

// Each runs fn as two subtests: once against a fresh miniredis (with
// real-time TTLs, exact at every command; the embedded server's clock
// ticks instead, see internal/embedded) and once against a fresh real
// redis-server.
func Each(t *testing.T, fn func(t *testing.T, b Backend)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) {
		fn(t, Mini(t))
	})
	t.Run("redis-server", func(t *testing.T) {
		fn(t, Real(t))
	})
}

// slowReply is the test clients' read timeout: long, since no test here
// is about a slow reply, and a big batch's script takes the embedded Redis
// seconds under the race detector. A reply that timed out would fail the
// test (the clients send nothing twice, as cmd/server's do not).
const slowReply = 30 * time.Second

// Mini returns a backend on a fresh miniredis whose TTLs run in real time.
func Mini(tb testing.TB) Backend {
	tb.Helper()
	m := miniredis.RunT(tb)
	m.ClockTTL(true)
	c := redis.NewClient(&redis.Options{Addr: m.Addr(), Protocol: 2, MaxRetries: -1, ReadTimeout: slowReply}) // as cmd/server
	tb.Cleanup(func() { c.Close() })
	return Backend{Name: "miniredis", Client: c, Mini: m}
}

// Real returns a backend on a fresh redis-server process without persistence.
// It skips the test when redis-server is not installed, or fails it when
// MEMSYNC_REQUIRE_REDIS=1.
func Real(tb testing.TB) Backend {
	tb.Helper()
	s := Start(tb, Options{})
	return Backend{Name: "redis-server", Client: s.Client(tb), Real: s}
}

// Options configure a redis-server started by Start.
type Options struct {
	// Persistent turns on the append-only file with appendfsync always, so
	// that a Restart keeps every acknowledged write.
	Persistent bool
	// Cluster starts the server as a Redis Cluster node (StartCluster
	// joins nodes into a cluster).
	Cluster bool
}

// Server is a redis-server process owned by a test.
type Server struct {
	Addr string
	port int
	dir  string
	opts Options
	cmd  *exec.Cmd
}

// Start starts redis-server on a free loopback port and stops it when the
// test ends. See Real for what happens when redis-server is missing.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("MEMSYNC_REQUIRE_REDIS") == "1" {
			tb.Fatalf("redistest: redis-server not found and MEMSYNC_REQUIRE_REDIS=1: %v", err)
		}
		tb.Skipf("redistest: skipping the real-Redis run: redis-server is not installed (%v)", err)
	}
	_ = bin
	s := &Server{port: freePort(tb), dir: tb.TempDir(), opts: opts}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	s.start(tb)
	tb.Cleanup(func() { s.kill() })
	return s
}

func (s *Server) start(tb testing.TB) {
	tb.Helper()
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--loglevel", "warning",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	}
	if s.opts.Persistent {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if s.opts.Cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(s.dir, "nodes.conf"))
	}
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		tb.Fatalf("redistest: start redis-server: %v", err)
	}
	// Wait until it answers PING; a fresh server takes a few milliseconds.
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			tb.Fatalf("redistest: redis-server on %s did not answer: %v\n%s", s.Addr, err, log)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Client returns a new client for the server, closed when the test ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	// Fail fast while a test has the server stopped, and never send a
	// command twice, as cmd/server does.
	c := redis.NewClient(&redis.Options{Addr: s.Addr, Protocol: 2, MaxRetries: -1, ReadTimeout: slowReply,
		DialerRetries: 2, DialerRetryTimeout: 50 * time.Millisecond})
	tb.Cleanup(func() { c.Close() })
	return c
}

// Stop shuts the server down the way an operator would (SIGTERM: with
// persistence on, the append-only file is flushed) and waits for it to exit.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.kill()
		tb.Fatalf("redistest: redis-server on %s did not stop within 10s", s.Addr)
	}
	s.cmd = nil
}

// Restart stops the server and starts it again on the same port and data
// directory: with Persistent it comes back with its data.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop(tb)
	s.start(tb)
}

func (s *Server) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before redis-server binds it; that race is rare enough for tests.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// String names the server in failure messages.
func (s *Server) String() string { return fmt.Sprintf("redis-server(%s)", s.Addr) }
