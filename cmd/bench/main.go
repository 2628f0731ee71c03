// Command bench measures memsync under load and reports its speed the way
// /work/shared/BENCH.md asks: as ratios against baselines measured in the
// same run, on the same machine, under the same load, because on a shared
// two-core machine an absolute number means little.
//
// It starts its own redis-server (no persistence), the baselines (a
// constant-JSON ceiling and naive chi + go-redis handlers doing one Redis
// command per request), and the real memsync binary, built from this module
// and run as deployed. Then it measures every arm in turn, round after
// round, and prints the median ratio of each memsync arm to its baseline
// with the spread across rounds.
//
//	go run ./cmd/bench                      # every arm, 5 s each, 3 rounds
//	go run ./cmd/bench -only naive-set,memsync-put -duration 3s -rounds 5
//	go run ./cmd/bench -only naive-set,memsync-put -cpuprofile /tmp/prof
//	go run ./cmd/bench -only watch-fanout -watchers 1000 -watch-rate 2000
//
// Load is closed-loop (each connection sends its next request when the last
// is answered): wrk -t1 -c32 when wrk is installed, otherwise a Go
// generator in a child process. Closed-loop numbers are throughput; they
// say nothing reliable about latency percentiles. The one latency target,
// the watch fan-out's, is measured open-loop (fanout.go).
//
// When an etcd binary is installed (Debian etcd-server), it is started too,
// on free loopback ports with a temporary data directory, and measured
// through its JSON gateway under the same load, for BENCH.md's comparison
// with etcd; without one those arms are skipped with a note.
//
// Beside each rate it reports the CPU time per operation of the load
// generator, the server and redis-server, and the share of the machine the
// three kept busy. On a saturated two-core machine the rates follow the
// total CPU per operation, so these say where an arm's time goes; and a
// share well under 100 % means something else was running, or the arm was
// bound by round trips rather than CPU.
//
// It exits 0 when targets are missed (it is a report) and non-zero only
// when it could not measure: no redis-server, a build failure, a server
// that did not start, or any failed request during a measurement.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	duration   time.Duration
	warmup     time.Duration
	rounds     int
	conns      int
	only       string
	gen        string
	memsyncBin string
	redisArgs  string
	cpuprofile string

	// The watch fan-out.
	watchers, watchRate int
	watchDuration       time.Duration

	// The child-process modes of the Go generator (see loadgen.go and
	// fanout.go).
	loadgen, url, watchRun string
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "how long each arm is loaded per round (whole seconds; BENCH.md quotes 8s)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "load each arm this long before the first round, unmeasured (0: none)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of every arm in turn; BENCH.md asks for at least 3")
	fs.IntVar(&o.conns, "conns", 32, "connections (closed loop)")
	fs.StringVar(&o.only, "only", "", "comma-separated arms to run (default all): "+armNames())
	fs.StringVar(&o.gen, "gen", "auto", "load generator: wrk, go, or auto (wrk when installed)")
	fs.StringVar(&o.memsyncBin, "memsync-bin", "", "memsync binary to measure (default: go build ./cmd/server of this module)")
	fs.StringVar(&o.redisArgs, "redis-args", "", "more redis-server arguments for every arm, e.g. \"--hash-max-listpack-value 1024\" (README: Redis settings)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "after the rounds, profile memsync's CPU under each memsync arm into this directory")
	fs.IntVar(&o.watchers, "watchers", 1000, "watch-fanout: SSE watchers held open")
	fs.IntVar(&o.watchRate, "watch-rate", 2000, "watch-fanout: matching writes per second, open loop")
	fs.DurationVar(&o.watchDuration, "watch-duration", 3*time.Second, "watch-fanout: how long it writes per round (at most -duration)")
	fs.StringVar(&o.loadgen, "loadgen", "", "internal: run the Go generator for this arm against -url and print JSON")
	fs.StringVar(&o.url, "url", "", "internal: the base URL for -loadgen")
	fs.StringVar(&o.watchRun, "watch-run", "", "internal: the fan-out's key segment for -loadgen watch-fanout and watch-writer")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if o.duration < time.Second || o.duration%time.Second != 0 || o.warmup < 0 || o.warmup%time.Second != 0 {
		return o, errors.New("-duration and -warmup must be whole seconds (wrk takes no less), -duration at least 1s")
	}
	if o.rounds < 1 || o.conns < 1 || o.watchers < 1 || o.watchRate < 1 {
		return o, errors.New("-rounds, -conns, -watchers and -watch-rate must be positive")
	}
	if o.watchDuration < time.Second || o.watchDuration%time.Second != 0 {
		return o, errors.New("-watch-duration must be whole seconds, at least 1s")
	}
	if o.gen != "auto" && o.gen != "wrk" && o.gen != "go" {
		return o, fmt.Errorf("-gen %q: want wrk, go or auto", o.gen)
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	switch o.loadgen {
	case "watch-fanout":
		return fanoutMain(o.url, o.watchRun, o.watchers, o.watchRate, o.duration, stdout)
	case "watch-writer":
		return writerMain(o.url, o.watchRun, o.watchRate, o.conns, o.duration, stdout)
	}
	if o.loadgen != "" {
		return loadgenMain(o.loadgen, o.url, o.conns, o.duration, stdout)
	}

	load := loadAverage() // before we add to it
	useWrk := o.gen == "wrk"
	if o.gen == "auto" {
		_, err := exec.LookPath("wrk")
		useWrk = err == nil
	}
	if useWrk {
		if _, err := exec.LookPath("wrk"); err != nil {
			return errors.New("-gen wrk: wrk is not installed (apt-get install wrk), or use -gen go")
		}
	}
	selected, err := selectArms(o.only, useWrk)
	if err != nil {
		return err
	}
	// etcd is optional: without it its arms are dropped, with a note.
	var notes []string
	if slices.ContainsFunc(selected, func(a *arm) bool { return a.needs == "etcd" }) {
		if _, err := exec.LookPath("etcd"); err != nil {
			fmt.Fprintln(stderr, errNoEtcd)
			notes = append(notes, etcdMissingNote)
			selected = slices.DeleteFunc(selected, func(a *arm) bool { return a.needs == "etcd" })
		}
	}
	if len(selected) == 0 {
		fmt.Fprintln(stdout, "nothing left to measure:", strings.Join(notes, "; "))
		return nil
	}
	tool := func(a *arm) string {
		if useWrk && !a.goOnly {
			return "wrk"
		}
		return "go"
	}

	dir, err := os.MkdirTemp("", "memsync-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	redisProc, redisAddr, err := startRedis(dir, strings.Fields(o.redisArgs))
	if err != nil {
		return err
	}
	defer redisProc.stop()

	urls, stopBaselines, err := startBaselines(redisAddr)
	if err != nil {
		return err
	}
	defer stopBaselines()
	// The process whose CPU each server's arms cost: the baselines run in
	// this one, which does nothing else while they are measured.
	pids := map[string]int{srvCeiling: os.Getpid(), srvNaiveGet: os.Getpid(), srvNaiveSet: os.Getpid(), srvNaiveLock: os.Getpid()}

	if slices.ContainsFunc(selected, func(a *arm) bool { return a.server == srvMemsync }) {
		bin := o.memsyncBin
		if bin == "" {
			fmt.Fprintln(stderr, "building ./cmd/server …")
			if bin, err = buildMemsync(dir, "memsync", ""); err != nil {
				return err
			}
		}
		p, url, err := startMemsync(bin, redisAddr, dir)
		if err != nil {
			return err
		}
		defer p.stop()
		urls[srvMemsync] = url
		pids[srvMemsync] = p.cmd.Process.Pid
	}
	if slices.ContainsFunc(selected, func(a *arm) bool { return a.server == srvEtcd }) {
		fmt.Fprintln(stderr, "starting etcd …")
		p, url, err := startEtcd(dir)
		if err != nil {
			return err
		}
		defer p.stop()
		urls[srvEtcd] = url
		pids[srvEtcd] = p.cmd.Process.Pid
		if err := prefillEtcd(url); err != nil {
			return err
		}
	}
	if err := prefill(ctx, redisAddr, urls[srvMemsync]); err != nil {
		return err
	}
	scripts, err := wrkScripts(dir, selected)
	if err != nil {
		return err
	}

	measure := func(a *arm, d time.Duration) (sample, error) {
		if err := ctx.Err(); err != nil {
			return sample{}, err
		}
		url := urls[a.server]
		var before memsyncStats
		if a.warmCache && !a.fanout {
			var err error
			if before, err = warmCache(url); err != nil {
				return sample{}, err
			}
		}
		if a.fanout {
			// It fills the cache itself, before its child starts.
			d = min(d, o.watchDuration)
		}
		cpu := startCPU(pids[a.server], redisProc.cmd.Process.Pid)
		start := time.Now()
		var s sample
		var gen, ops float64
		var err error
		switch {
		case a.fanout:
			var f fanSample
			f, gen, err = runFanout(url, pids[a.server], o, d)
			s.fan = &f
			// Events per second from the first write's due time to the
			// last event's arrival: the rate the watchers were served at.
			ops = float64(f.Delivered)
			s.rate = ops / max(f.DeliverSeconds, d.Seconds())
		case tool(a) == "wrk":
			s.rate, gen, err = runWrk(scripts[a.name], url, o.conns, d)
		default:
			s.rate, gen, err = runGoLoad(a, url, o.conns, d)
		}
		elapsed := time.Since(start).Seconds()
		if err != nil {
			return s, err
		}
		if !a.fanout {
			s.rate *= a.perRequest()
			ops = s.rate * d.Seconds()
		}
		if srv, rds, ok := cpu.since(); ok && ops > 0 {
			s.cpuOK = true
			s.genCPU, s.serverCPU, s.redisCPU = gen/ops*1e6, srv/ops*1e6, rds/ops*1e6
			s.busy = (gen + srv + rds) / (elapsed * float64(runtime.NumCPU()))
		}
		if a.warmCache && !a.fanout {
			after, err := fetchStats(url)
			if err != nil {
				return s, err
			}
			hits, misses := after.CacheHits-before.CacheHits, after.CacheMisses-before.CacheMisses
			if hits+misses > 0 {
				s.hitRate, s.hitOK = float64(hits)/float64(hits+misses), true
			}
		}
		return s, nil
	}

	if o.warmup > 0 {
		fmt.Fprintf(stderr, "warming up every arm for %v …\n", o.warmup)
		for _, a := range selected {
			if _, err := measure(a, o.warmup); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
	}
	samples := make(map[string][]sample)
	for round := 1; round <= o.rounds; round++ {
		for _, a := range selected {
			s, err := measure(a, o.duration)
			if err != nil {
				return fmt.Errorf("round %d: %w", round, err)
			}
			samples[a.name] = append(samples[a.name], s)
			fmt.Fprintf(stderr, "round %d/%d  %-18s %9s %-8s  CPU µs/op: gen %5.1f, server %5.1f, redis %5.1f; %3.0f%% of the CPUs%s\n",
				round, o.rounds, a.name, thousands(s.rate), a.unit, s.genCPU, s.serverCPU, s.redisCPU, 100*s.busy, s.extra())
		}
	}

	report(stdout, reportInput{
		args: args, opts: o, useWrk: useWrk, arms: selected, tool: tool, samples: samples, load: load,
		loadAfter: loadAverage(), notes: notes, etcd: urls[srvEtcd] != "",
	})

	if o.cpuprofile != "" {
		return profile(ctx, stdout, o, dir, redisAddr, selected, tool, scripts)
	}
	return nil
}

// selectArms returns the arms -only names, in run order, or by default all
// of them but naive-get-go when there is no wrk (naive-get then runs on the
// Go generator already). The etcd arms are dropped later when there is no
// etcd.
func selectArms(only string, useWrk bool) ([]*arm, error) {
	if only == "" {
		var out []*arm
		for _, a := range arms {
			if useWrk || a.name != "naive-get-go" {
				out = append(out, a)
			}
		}
		return out, nil
	}
	want := make(map[string]bool)
	for _, name := range strings.Split(only, ",") {
		name = strings.TrimSpace(name)
		if armByName(name) == nil {
			return nil, fmt.Errorf("-only: no arm %q; the arms are %s", name, armNames())
		}
		want[name] = true
	}
	var out []*arm
	for _, a := range arms {
		if want[a.name] {
			out = append(out, a)
		}
	}
	return out, nil
}
