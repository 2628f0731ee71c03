package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
)

// startServer runs the real run() on a free loopback port with the given
// extra flags and environment, and stops it when the test ends. It returns
// the base URL once /healthz answers.
func startServer(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	return launch(t, http.DefaultClient, "http", env, args...)
}

// freeAddr returns a loopback address with a port free a moment ago, for
// a server to listen on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// launch is startServer for a server that speaks scheme, probed with client.
func launch(t *testing.T, client *http.Client, scheme string, env map[string]string, args ...string) string {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		done <- run(ctx, append([]string{"--addr", addr}, args...), func(k string) string { return env[k] }, logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("run did not return within 15 s of cancellation")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	base := scheme + "://" + addr
	serverLogs.Store(base, logs)
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := client.Get(base + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return base
			}
		}
		select {
		case err := <-done:
			t.Fatalf("run exited early: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not answer /healthz: %v\n%s", err, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serverLogs holds each started server's log, by base URL.
var serverLogs sync.Map

// catchHangUp catches SIGHUP in the test too, until it ends, so that the
// SIGHUPs a test sends its servers can never end the test process.
func catchHangUp(t *testing.T) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	t.Cleanup(func() { signal.Stop(hup) })
}

// hangUpAndAwaitLog sends this process SIGHUP and waits up to 5 s for the
// log of the server at base to contain text once more than it did.
func hangUpAndAwaitLog(t *testing.T, base, text string) {
	t.Helper()
	logs, _ := serverLogs.Load(base)
	count := func() int { return strings.Count(logs.(*syncBuffer).String(), text) }
	before := count()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); count() <= before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%q not logged within 5 s of SIGHUP", text)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunServesEmbeddedAndShutsDown(t *testing.T) {
	base := startServer(t, nil)
	req, _ := http.NewRequest("PUT", base+"/v1/kv/tasks/T1/state", strings.NewReader(`{"value":{"status":"running"}}`))
	req.Header.Set("X-Worker-Id", "w1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("PUT = %d", res.StatusCode)
	}
	res, err = http.Get(base + "/v1/kv/tasks/T1/state")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `"value":{"status":"running"}`) {
		t.Errorf("GET = %d %s", res.StatusCode, body)
	}
}

func TestParseConfig(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("# token worker role\n0123456789abcdef w1 worker\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badTokens := filepath.Join(dir, "bad-tokens")
	if err := os.WriteFile(badTokens, []byte("0123456789abcdef w1 superuser\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, _ := writeCertificate(t, dir, 1)
	_, otherKey, _ := writeCertificate(t, t.TempDir(), 2)
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(config) error
		wantErr string
	}{
		{name: "defaults", check: func(c config) error {
			if c.Addr != "127.0.0.1:8080" || c.Namespace != "task-sentinel" || c.DefaultTTL != time.Hour || c.RedisURL != "" ||
				c.EventLogLen != 10000 || c.DataFile != "" || c.SaveInterval != 10*time.Second {
				return fmt.Errorf("got %+v", c)
			}
			return nil
		}},
		{name: "environment fallback", env: map[string]string{"MEMSYNC_NAMESPACE": "prod", "MEMSYNC_DEFAULT_TTL": "90s", "REDIS_URL": "redis://x:6379"},
			check: func(c config) error {
				if c.Namespace != "prod" || c.DefaultTTL != 90*time.Second || c.RedisURL != "redis://x:6379" {
					return fmt.Errorf("got %+v", c)
				}
				return nil
			}},
		{name: "flag wins over environment", args: []string{"--namespace", "flag"}, env: map[string]string{"MEMSYNC_NAMESPACE": "env"},
			check: func(c config) error {
				if c.Namespace != "flag" {
					return fmt.Errorf("namespace %q", c.Namespace)
				}
				return nil
			}},
		{name: "ttl 0 means never", args: []string{"--default-ttl", "0"}, check: func(c config) error {
			if c.DefaultTTL != 0 {
				return fmt.Errorf("default ttl %s", c.DefaultTTL)
			}
			return nil
		}},
		{name: "event log length", args: []string{"--event-log-len", "500000"}, check: func(c config) error {
			if c.EventLogLen != 500000 {
				return fmt.Errorf("event log length %d", c.EventLogLen)
			}
			return nil
		}},
		{name: "event log length from the environment", env: map[string]string{"MEMSYNC_EVENT_LOG_LEN": "20000"}, check: func(c config) error {
			if c.EventLogLen != 20000 {
				return fmt.Errorf("event log length %d", c.EventLogLen)
			}
			return nil
		}},
		{name: "empty event log", args: []string{"--event-log-len", "0"}, wantErr: "event-log-len"},
		{name: "bad ttl", args: []string{"--default-ttl", "soon"}, wantErr: "default-ttl"},
		{name: "negative ttl", args: []string{"--default-ttl", "-1"}, wantErr: "default-ttl"},
		{name: "default above max", args: []string{"--default-ttl", "2h", "--max-ttl", "1h"}, wantErr: "above max-ttl"},
		{name: "public address refused", args: []string{"--addr", "0.0.0.0:8080"}, wantErr: "without authentication"},
		{name: "public address with tokens", args: []string{"--addr", "0.0.0.0:8080", "--tokens", tokens}, check: func(c config) error {
			if p, ok := c.Tokens.Lookup("0123456789abcdef"); !ok || p.WorkerID != "w1" {
				return fmt.Errorf("tokens %+v: w1's token not loaded", c.Tokens)
			}
			return nil
		}},
		{name: "tokens from the environment", env: map[string]string{"MEMSYNC_TOKENS": tokens, "MEMSYNC_RATE_LIMIT": "50", "MEMSYNC_MAX_WATCHERS_PER_TOKEN": "3"},
			check: func(c config) error {
				if c.Tokens == nil || c.RateLimit != 50 || c.MaxWatchersPerToken != 3 {
					return fmt.Errorf("tokens %v, rate %d, watchers %d", c.Tokens, c.RateLimit, c.MaxWatchersPerToken)
				}
				return nil
			}},
		{name: "per-token limits by default", check: func(c config) error {
			if c.Tokens != nil || c.RateLimit != defaultRateLimit || c.MaxWatchersPerToken != defaultMaxWatchersPerToken {
				return fmt.Errorf("tokens %v, rate %d, watchers %d", c.Tokens, c.RateLimit, c.MaxWatchersPerToken)
			}
			return nil
		}},
		{name: "bad token file", args: []string{"--tokens", badTokens}, wantErr: `role "superuser"`},
		{name: "missing token file", args: []string{"--tokens", filepath.Join(dir, "none")}, wantErr: "bad token file"},
		{name: "negative rate limit", args: []string{"--rate-limit", "-1"}, wantErr: "rate-limit"},
		{name: "public address with --insecure", args: []string{"--addr", "0.0.0.0:8080", "--insecure"}, check: func(c config) error { return nil }},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
		{name: "data file", args: []string{"--data-file", "/var/lib/memsync/data", "--save-interval", "1m"}, check: func(c config) error {
			if c.DataFile != "/var/lib/memsync/data" || c.SaveInterval != time.Minute {
				return fmt.Errorf("data file %q every %s", c.DataFile, c.SaveInterval)
			}
			return nil
		}},
		{name: "data file from the environment, saved only at shutdown", env: map[string]string{"MEMSYNC_DATA_FILE": "d", "MEMSYNC_SAVE_INTERVAL": "0"},
			check: func(c config) error {
				if c.DataFile != "d" || c.SaveInterval != 0 {
					return fmt.Errorf("data file %q every %s", c.DataFile, c.SaveInterval)
				}
				return nil
			}},
		{name: "data file with a Redis", args: []string{"--data-file", "d", "--redis-url", "redis://x:6379"}, wantErr: "pass one or the other"},
		{name: "bad save interval", args: []string{"--save-interval", "often"}, wantErr: "save-interval"},
		{name: "tls certificate without key", args: []string{"--tls-cert", certFile}, wantErr: "tls-cert and tls-key go together"},
		{name: "tls key without certificate", env: map[string]string{"MEMSYNC_TLS_KEY": keyFile}, wantErr: "tls-cert and tls-key go together"},
		{name: "tls key that does not match", args: []string{"--tls-cert", certFile, "--tls-key", otherKey}, wantErr: "tls-cert"},
		{name: "missing tls files", args: []string{"--tls-cert", filepath.Join(dir, "none"), "--tls-key", keyFile}, wantErr: "tls-cert"},
		{name: "client ca without a certificate", args: []string{"--tls-client-ca", certFile}, wantErr: "tls-client-ca needs tls-cert"},
		{name: "client ca without certificates in it", args: []string{"--tls-cert", certFile, "--tls-key", keyFile, "--tls-client-ca", tokens},
			wantErr: "no PEM certificate"},
		{name: "public address with client certificates", args: []string{"--addr", "0.0.0.0:8443", "--tls-cert", certFile, "--tls-key", keyFile},
			env: map[string]string{"MEMSYNC_TLS_CLIENT_CA": certFile}, check: func(c config) error {
				if conf := c.Certificate.current.Load(); conf.ClientCAs == nil || conf.ClientAuth != tls.RequireAndVerifyClientCert {
					return fmt.Errorf("client certificates not required: %+v", conf)
				}
				return nil
			}},
		{name: "tls from the environment", env: map[string]string{"MEMSYNC_TLS_CERT": certFile, "MEMSYNC_TLS_KEY": keyFile},
			check: func(c config) error {
				if c.Certificate == nil || c.Certificate.current.Load() == nil {
					return fmt.Errorf("certificate not loaded: %+v", c.Certificate)
				}
				return nil
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.check(c); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestMaskURL(t *testing.T) {
	got := maskURL("redis://user:secret@h1:7000,redis://:other@h2:7001")
	if strings.Contains(got, "secret") || strings.Contains(got, "other") {
		t.Errorf("maskURL leaked a password: %s", got)
	}
}

// TestREADMECurl runs every curl line of the README, in order, against a
// fresh server, and checks each "# → STATUS fragment…fragment" annotation:
// the status, and that each JSON fragment between "…" appears in the body.
func TestREADMECurl(t *testing.T) {
	runREADME(t, startServer(t, nil))
}

// The README's tour runs as well on Redis Cluster (three masters) and
// behind Sentinel as on one Redis: every key family, batches, locks, watch
// streams, expiry and the cache, through go-redis's cluster and failover
// clients against real redis-server processes.
func TestREADMECurlOnClusterAndSentinel(t *testing.T) {
	t.Run("cluster", func(t *testing.T) {
		nodes := redistest.StartCluster(t, 3)
		runREADME(t, startServer(t, nil, "--redis-url", clusterURL(nodes)))
	})
	t.Run("sentinel", func(t *testing.T) {
		_, _, sentinel := redistest.StartSentinel(t, "memsync", 0)
		runREADME(t, startServer(t, nil, "--redis-url", "redis://"+sentinel+"?master_name=memsync"))
	})
}

// runREADME runs every curl line of the README, in order, against the
// server at base (see TestREADMECurl).
func runREADME(t *testing.T, base string) {
	t.Helper()
	for _, tool := range []string{"bash", "curl", "base64", "sed"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("MEMSYNC_REQUIRE_CURL") == "1" {
				t.Fatalf("%s is missing and MEMSYNC_REQUIRE_CURL=1", tool)
			}
			t.Skipf("skipping: %s is not installed", tool)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(base, "http://")

	dir := t.TempDir()
	var script strings.Builder
	fmt.Fprintf(&script, `set -u
status_file=%[1]s/status; body_file=%[1]s/body
curl() { command curl "$@" -w '%%{stderr}%%{http_code}' 2>"$status_file" | tee "$body_file"; return "${PIPESTATUS[0]}"; }
check() {
  local want=$1 line=$2 got; got=$(cat "$status_file")
  if [ "$got" != "$want" ]; then echo "README line $line: status $got, want $want; body: $(cat "$body_file")" >&2; exit 1; fi
  echo "$3" | base64 -d | while IFS= read -r frag; do
    [ -z "$frag" ] && continue
    grep -qF -- "$frag" "$body_file" || { echo "README line $line: body lacks $frag; body: $(cat "$body_file")" >&2; exit 1; }
  done || exit 1
}
`, dir)
	inBlock, curls, checks := false, 0, 0
	for i, line := range strings.Split(string(readme), "\n") {
		n := i + 1
		switch {
		case strings.HasPrefix(line, "```sh"):
			inBlock = true
			continue
		case strings.HasPrefix(line, "```"):
			inBlock = false
			continue
		}
		if !inBlock || strings.HasPrefix(line, "make ") || strings.HasPrefix(line, "redis-cli ") || strings.TrimSpace(line) == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# → "); ok {
			status, text, _ := strings.Cut(rest, " ")
			var frags []string
			if strings.HasPrefix(text, "{") || strings.HasPrefix(text, "…") {
				for _, f := range strings.Split(text, "…") {
					if f = strings.TrimSpace(f); f != "" {
						frags = append(frags, f)
					}
				}
			}
			fmt.Fprintf(&script, "check %s %d %s\n", status, n,
				base64.StdEncoding.EncodeToString([]byte(strings.Join(frags, "\n")+"\n")))
			checks++
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.ReplaceAll(line, "localhost:8080", host)
		fmt.Fprintf(&script, "%s >/dev/null || { echo 'README line %d failed' >&2; exit 1; }\n", line, n)
		if strings.Contains(line, "curl ") {
			curls++
		}
	}
	if curls < 20 || checks < 20 {
		t.Fatalf("found %d curl lines and %d checks in the README; the parser is probably broken", curls, checks)
	}
	cmd := exec.Command("bash", "-c", script.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README curl lines failed: %v\n%s", err, out)
	}
	t.Logf("ran %d curl lines, checked %d results", curls, checks)
}

// When the master behind Sentinel stops, Sentinel promotes its replica and
// memsync follows by itself: meanwhile writes are answered 503 (never 500,
// never a dead process), and afterwards every write acknowledged and
// replicated before is there and writes go on.
func TestSentinelFailover(t *testing.T) {
	master, reps, sentinel := redistest.StartSentinel(t, "memsync", 1)
	base := startServer(t, nil, "--redis-url", "redis://"+sentinel+"?master_name=memsync")
	writeTasks(t, base, 20)
	ctx := context.Background()
	if n, err := master.Client(t).Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}

	master.Stop(t)
	stopped := time.Now()
	statuses := writeUntilAccepted(t, base)
	t.Logf("first write accepted %v after the master stopped; answers meanwhile: %v", time.Since(stopped).Round(time.Millisecond), statuses)
	if role, err := reps[0].Client(t).Do(ctx, "ROLE").Slice(); err != nil || len(role) == 0 || role[0] != "master" {
		t.Errorf("the replica's ROLE = %v, %v; want master", role, err)
	}
	checkTasks(t, base, 20)
}

// writeTasks writes tasks/T<i>/state = i for i < n, each answered 200.
func writeTasks(t *testing.T, base string, n int) {
	t.Helper()
	for i := range n {
		if status, body := httpDo(t, "PUT", fmt.Sprintf("%s/v1/kv/tasks/T%d/state", base, i), fmt.Sprintf(`{"value":%d}`, i)); status != 200 {
			t.Fatalf("PUT = %d %s", status, body)
		}
	}
}

// checkTasks reads back what writeTasks wrote.
func checkTasks(t *testing.T, base string, n int) {
	t.Helper()
	for i := range n {
		status, body := httpDo(t, "GET", fmt.Sprintf("%s/v1/kv/tasks/T%d/state", base, i), "")
		if status != 200 || !strings.Contains(body, fmt.Sprintf(`"value":%d,`, i)) {
			t.Errorf("GET tasks/T%d/state = %d %s", i, status, body)
		}
	}
}

// writeUntilAccepted writes tasks/after/state until it is answered 200,
// for at most 30 s, failing on any answer but 200 and 503; it returns how
// many of each it got.
func writeUntilAccepted(t *testing.T, base string) map[int]int {
	t.Helper()
	statuses := map[int]int{}
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		status, body := httpDo(t, "PUT", base+"/v1/kv/tasks/after/state", `{"value":"after"}`)
		statuses[status]++
		switch {
		case status == 200:
			return statuses
		case status != 503:
			t.Fatalf("PUT = %d %s, want 503 until Redis is back", status, body)
		case time.Since(start) > 30*time.Second:
			t.Fatalf("no write accepted within 30 s: %v", statuses)
		}
	}
}

// SIGHUP reloads the token file: a token added works, one removed is
// refused, and a broken file changes nothing.
func TestTokensReloadOnHangup(t *testing.T) {
	catchHangUp(t)

	path := filepath.Join(t.TempDir(), "tokens")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("old-token-0123456789 w1 worker\n")
	base := startServer(t, nil, "--tokens", path)
	status := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/v1/kv/tasks/T1/state", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	// waitFor sends SIGHUP until token gets want (the reload is
	// asynchronous), for at most 5 s.
	waitFor := func(token string, want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); status(token) != want; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("token %q: status %d 5 s after SIGHUP, want %d", token, status(token), want)
			}
			if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := status("old-token-0123456789"); got != 404 {
		t.Fatalf("old token: %d, want 404 (admitted, no such key)", got)
	}
	write("new-token-0123456789 w2 worker\n")
	waitFor("new-token-0123456789", 404)
	if got := status("old-token-0123456789"); got != 401 {
		t.Errorf("old token after the reload: %d, want 401", got)
	}
	write("new-token-0123456789 w2 superuser\n")
	hangUpAndAwaitLog(t, base, "tokens NOT reloaded")
	if got := status("new-token-0123456789"); got != 404 {
		t.Errorf("after a broken file: %d, want 404 (the tokens as they were)", got)
	}
}

// A Redis Cluster failover while memsync runs: the replica of the master
// that holds the event log takes over (CLUSTER FAILOVER), and memsync goes
// on by itself. Writes are answered 200 or 503 meanwhile, every write made
// before is there afterwards, and a watch stream opened before hears a
// write made after: the scripts are loaded again on the new master (which
// never saw them) and the events still reach the stream.
func TestClusterFailover(t *testing.T) {
	nodes := redistest.StartCluster(t, 3)
	ctx := context.Background()
	slot, err := nodes[0].Client(t).ClusterKeySlot(ctx, "ms:{#memsync}#events").Result()
	if err != nil {
		t.Fatal(err)
	}
	master := nodes[slot*int64(len(nodes))/16384]
	replica := redistest.AddClusterReplica(t, nodes, master)
	base := startServer(t, nil, "--redis-url", clusterURL(nodes))
	writeTasks(t, base, 20)
	if n, err := master.Client(t).Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}

	// A watcher, opened before the failover.
	heard := watchData(t, base, "tasks/after/**")

	if err := replica.Client(t).Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		t.Fatalf("CLUSTER FAILOVER: %v", err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		role, err := replica.Client(t).Do(ctx, "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "master" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not take over within 20 s: %v %v", role, err)
		}
	}
	statuses := writeUntilAccepted(t, base)
	t.Logf("answers to the first writes after the failover: %v", statuses)
	select {
	case line := <-heard:
		if !strings.Contains(line, `"key":"tasks/after/state"`) {
			t.Errorf("the watcher heard %s", line)
		}
	case <-time.After(10 * time.Second):
		t.Error("the watcher opened before the failover did not hear the write after it")
	}
	checkTasks(t, base, 20)
}

// --read-timeout cuts off a client that stalls mid-request, and only that:
// a watch stream and a lock request that waits outlive it.
func TestReadTimeout(t *testing.T) {
	base := startServer(t, nil, "--read-timeout", "300ms")
	host := strings.TrimPrefix(base, "http://")

	// A body promised and not sent: the server closes the connection.
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /v1/kv/tasks/T1/state HTTP/1.1\r\nHost: %s\r\nContent-Length: 100\r\n\r\n{\"value\":", host)
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(conn) // until the server closes it
	if err != nil || time.Since(start) > 3*time.Second {
		t.Fatalf("stalled request: %v after %v (%q); want the connection closed within about 300 ms", err, time.Since(start), rest)
	}
	if status, _ := httpDo(t, "GET", base+"/v1/kv/tasks/T1/state", ""); status != 404 {
		t.Errorf("the stalled PUT was applied: GET = %d", status)
	}

	// A watch stream, quiet for longer than the timeout, still delivers.
	heard := watchData(t, base, "tasks/**")

	// A lock request that waits longer than the timeout gets the lock.
	if status, body := httpDo(t, "POST", base+"/v1/locks/jobs/a", `{"ttl_ms":10000}`); status != 200 {
		t.Fatalf("first acquire = %d %s", status, body)
	}
	granted := make(chan int, 1)
	go func() {
		status, _ := httpDo(t, "POST", base+"/v1/locks/jobs/a", `{"ttl_ms":1000,"wait_ms":3000}`)
		granted <- status
	}()
	time.Sleep(800 * time.Millisecond)
	if status, body := httpDo(t, "DELETE", base+"/v1/locks/jobs/a?force=true", ""); status != 204 {
		t.Fatalf("release = %d %s", status, body)
	}
	if status := <-granted; status != 200 {
		t.Errorf("a lock request that waited 800 ms = %d, want 200", status)
	}

	if status, body := httpDo(t, "PUT", base+"/v1/kv/tasks/T2/state", `{"value":1}`); status != 200 {
		t.Fatalf("PUT = %d %s", status, body)
	}
	select {
	case line, ok := <-heard:
		if !ok || !strings.Contains(line, `"key":"tasks/T2/state"`) {
			t.Errorf("the watch stream, 800 ms old: %q (open %v)", line, ok)
		}
	case <-time.After(5 * time.Second):
		t.Error("the watch stream did not deliver a write made after the read timeout")
	}
}

// httpDo sends a request and returns the status and body.
func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// watchData opens GET /v1/watch?pattern= on base, closed when the test
// ends, and delivers each "data: " line of the stream; the channel is
// closed when the stream ends.
func watchData(t *testing.T, base, pattern string) <-chan string {
	t.Helper()
	return watchDataWith(t, http.DefaultClient, base, pattern)
}

// watchDataWith is watchData through client.
func watchDataWith(t *testing.T, client *http.Client, base, pattern string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/watch?pattern="+pattern, nil)
	res, err := client.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("watch %s: %v %v", pattern, res, err)
	}
	heard := make(chan string, 16)
	go func() {
		defer close(heard)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "data: ") {
				heard <- line
			}
		}
	}()
	return heard
}

// At start the server advises a hash-max-listpack-value that keeps its keys
// compact, when Redis has a smaller one, and says nothing once it is set.
func TestAdvisesListpackValue(t *testing.T) {
	b := redistest.Real(t)
	logOf := func() string {
		base := startServer(t, nil, "--redis-url", "redis://"+b.Real.Addr)
		logs, _ := serverLogs.Load(base)
		return logs.(*syncBuffer).String()
	}
	if log := logOf(); !strings.Contains(log, "CONFIG SET hash-max-listpack-value 1024") {
		t.Errorf("no advice on Redis's default hash-max-listpack-value; log:\n%s", log)
	}
	if err := b.Client.ConfigSet(context.Background(), "hash-max-listpack-value", "1024").Err(); err != nil {
		t.Fatal(err)
	}
	if log := logOf(); strings.Contains(log, "hash-max-listpack-value") {
		t.Errorf("advice although hash-max-listpack-value is 1024; log:\n%s", log)
	}
}
