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
)

// etcd is BENCH.md's "what many teams would pick instead": etcd 3.4 (Debian
// etcd-server), one member on free loopback ports with a fresh data
// directory in the benchmark's temporary directory, measured through its
// JSON gateway (POST /v3/kv/put, /v3/kv/range with base64 keys and values)
// under the same load as memsync. It runs as installed: its write-ahead log
// is fsynced, as in any deployment of it, while the benchmark's Redis keeps
// nothing on disk; the report says so.

// errNoEtcd is returned by startEtcd when there is no etcd to start.
var errNoEtcd = errors.New("etcd: not installed, skipped")

// etcdMissingNote is the report's note when etcd's arms were dropped for
// want of etcd (rather than left out by -only).
var etcdMissingNote = errNoEtcd.Error() + " (Debian: apt-get install etcd-server)"

// startEtcd starts etcd on free loopback ports with a data directory in dir
// and waits until its gateway answers.
func startEtcd(dir string) (*proc, string, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, "", errNoEtcd
	}
	cport, err := freePort()
	if err != nil {
		return nil, "", err
	}
	pport, err := freePort()
	if err != nil {
		return nil, "", err
	}
	client := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(cport))
	peer := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(pport))
	// etcd reads ETCD_* variables as flags: the caller's must not leak in.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	p, err := startProc("etcd", filepath.Join(dir, "etcd.log"), env, bin,
		"--name", "bench", "--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "bench="+peer, "--initial-cluster-state", "new",
		"--logger", "zap", "--log-level", "warn")
	if err != nil {
		return nil, "", err
	}
	err = waitUntil(p, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, "POST", client+"/v3/kv/range",
			strings.NewReader(`{"key":"`+etcdKey(0)+`"}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("/v3/kv/range: status %d: %.200s", resp.StatusCode, body)
		}
		return nil
	})
	if err != nil {
		p.stop()
		return nil, "", p.failure(err)
	}
	return p, client, nil
}

// prefillEtcd puts every key the etcd range arm reads, and checks that one
// reads back.
func prefillEtcd(url string) error {
	c, err := dial(strings.TrimPrefix(url, "http://"))
	if err != nil {
		return err
	}
	defer c.close()
	for i := range keySpace {
		if err := c.expect(200, "POST", "/v3/kv/put", nil, etcdPutBody(i)); err != nil {
			return fmt.Errorf("prefill etcd: %w", err)
		}
	}
	if err := c.expect(200, "POST", "/v3/kv/range", nil, etcdRangeBody(keySpace-1)); err != nil {
		return fmt.Errorf("prefill etcd: %w", err)
	}
	if err := checkRange(c.body.Bytes()); err != nil {
		return fmt.Errorf("prefill etcd: %w", err)
	}
	return nil
}

func etcdVersion() string {
	out, _ := exec.Command("etcd", "--version").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "etcd Version: "); ok {
			return strings.TrimSpace(v)
		}
	}
	return "(version unknown)"
}
