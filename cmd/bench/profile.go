package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// pprofHook is compiled into a second memsync binary through go build
// -overlay, so that cmd/server itself never carries a profiling endpoint:
// it serves net/http/pprof on the address in MEMSYNC_BENCH_PPROF, apart
// from the API (which has its own mux).
const pprofHook = `package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("MEMSYNC_BENCH_PPROF"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
`

// profile runs each selected memsync arm once more against a memsync built
// with pprofHook, on the same Redis, and saves a CPU profile of the server
// under that load into o.cpuprofile. These runs are not part of the report:
// the profiler costs a few per cent.
func profile(ctx context.Context, w io.Writer, o options, dir, redisAddr string, selected []*arm, tool func(*arm) string, scripts map[string]string) error {
	if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
		return err
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	hook := filepath.Join(dir, "pprof_hook.go")
	if err := os.WriteFile(hook, []byte(pprofHook), 0o644); err != nil {
		return err
	}
	overlay, err := json.Marshal(map[string]map[string]string{
		"Replace": {filepath.Join(root, "cmd", "server", "zz_bench_pprof.go"): hook},
	})
	if err != nil {
		return err
	}
	overlayPath := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlayPath, overlay, 0o644); err != nil {
		return err
	}
	bin, err := buildMemsync(dir, "memsync-pprof", overlayPath)
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	pprofAddr := "127.0.0.1:" + strconv.Itoa(port)
	p, url, err := startMemsync(bin, redisAddr, dir, "MEMSYNC_BENCH_PPROF="+pprofAddr)
	if err != nil {
		return err
	}
	defer p.stop()

	for _, a := range selected {
		if a.server != srvMemsync {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		out := filepath.Join(o.cpuprofile, a.name+".pprof")
		d := o.duration
		if a.fanout {
			d = min(d, o.watchDuration)
		}
		if a.warmCache && !a.fanout {
			if _, err := warmCache(url); err != nil {
				return fmt.Errorf("profiling %s: %w", a.name, err)
			}
		}
		got := make(chan error, 1)
		go func() { got <- fetchProfile(pprofAddr, d, out) }()
		time.Sleep(50 * time.Millisecond) // let the profiler start before the load
		var rate float64
		switch {
		case a.fanout:
			// The profile covers the writing; the watchers connect first.
			var f fanSample
			f, _, err = runFanout(url, p.cmd.Process.Pid, o, d)
			rate = float64(f.Delivered) / max(f.DeliverSeconds, d.Seconds())
		case tool(a) == "wrk":
			rate, _, err = runWrk(scripts[a.name], url, o.conns, d)
			rate *= a.perRequest()
		default:
			rate, _, err = runGoLoad(a, url, o.conns, d)
			rate *= a.perRequest()
		}
		if err != nil {
			return fmt.Errorf("profiling %s: %w", a.name, err)
		}
		if err := <-got; err != nil {
			return fmt.Errorf("profiling %s: %w", a.name, err)
		}
		fmt.Fprintf(w, "cpu profile of memsync under %s (%s %s while profiled): go tool pprof -top %s\n", a.name, thousands(rate), a.unit, out)
	}
	return nil
}

// fetchProfile saves a CPU profile of d from the pprof endpoint at addr.
func fetchProfile(addr string, d time.Duration, path string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d/time.Second))
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
