package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

type reportInput struct {
	args    []string
	opts    options
	useWrk  bool
	arms    []*arm
	tool    func(*arm) string
	samples map[string][]sample // per arm, one per round
	load    string              // load average before the benchmark began
	// loadAfter is the load average after the rounds, notes are lines the
	// report must carry (what was skipped), etcd is whether etcd ran.
	loadAfter string
	notes     []string
	etcd      bool
}

// sample is one arm's measurement in one round.
type sample struct {
	rate float64 // operations per second
	// CPU µs per operation of the load generator, the server process and
	// redis-server, and the share of all CPUs the three used together; cpuOK
	// is false where /proc could not be read.
	genCPU, serverCPU, redisCPU, busy float64
	cpuOK                             bool

	// hitRate is the share of the cacheable reads memsync answered from its
	// cache during the measurement (arms with warmCache); hitOK when known.
	hitRate float64
	hitOK   bool
	// fan is the watch fan-out's round.
	fan *fanSample
}

// extra is what the progress line adds to the rate for some arms.
func (s sample) extra() string {
	switch {
	case s.fan != nil:
		f := s.fan
		return fmt.Sprintf("\n               delivered %.3f%% (%d resets, %d streams ended); latency from sending p50 %.1f ms, p99 %.1f ms; from due time p99 %.1f ms; %s writes/s sustained; RSS %.1f MB; cache %d/%d",
			f.deliveredPct(), f.Resets, f.Ended, f.P50Ms, f.P99Ms, f.DueP99Ms, thousands(f.writeRate()), f.rssMB, f.cacheEntries, f.cacheMax)
	case s.hitOK:
		return fmt.Sprintf("; cache hits %.2f%%", 100*s.hitRate)
	}
	return ""
}

// rates are the rates of ss, in round order.
func rates(ss []sample) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = s.rate
	}
	return out
}

// medianCPU formats the median CPU µs per operation of ss.
func medianCPU(ss []sample, of func(sample) float64) string {
	var xs []float64
	for _, s := range ss {
		if s.cpuOK {
			xs = append(xs, of(s))
		}
	}
	if len(xs) == 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f", median(xs))
}

// report prints what was run, on what, the raw rates, and the ratios with
// their targets.
func report(w io.Writer, in reportInput) {
	o := in.opts
	fmt.Fprintln(w)
	fmt.Fprintln(w, "memsync load benchmark: ratios against baselines measured in the same run (BENCH.md)")
	fmt.Fprintf(w, "command:  %s\n", commandLine(in.args))
	fmt.Fprintf(w, "machine:  %d CPUs, %s, load average %s before the run, %s after\n", runtime.NumCPU(), cpuModel(), in.load, in.loadAfter)
	gen := "Go generator (wrk not used)"
	if in.useWrk {
		gen = "wrk " + wrkVersion()
	}
	settings := `no persistence (--save "" --appendonly no)`
	if o.redisArgs != "" {
		settings += ", " + o.redisArgs
	} else {
		settings += ", otherwise as installed"
	}
	fmt.Fprintf(w, "software: %s %s/%s; redis-server %s, %s; %s\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, redisVersion(), settings, gen)
	if in.etcd {
		fmt.Fprintf(w, "          etcd %s, one member, as installed (WAL fsynced, data in the temp dir), through its JSON gateway\n", etcdVersion())
	}
	for _, n := range in.notes {
		fmt.Fprintf(w, "note:     %s\n", n)
	}
	fmt.Fprintf(w, "load:     closed loop, %d connections, %v per arm per round, %d rounds of every arm in turn, %v warm-up\n",
		o.conns, o.duration, o.rounds, o.warmup)
	if in.useWrk {
		fmt.Fprintf(w, "          wrk -t1 -c%d -d%s -s <arm>.lua for one-request arms; *-go and lock arms on the Go generator\n",
			o.conns, wrkDuration(o.duration))
	}
	fmt.Fprintf(w, "keys:     %d keys tasks/T<i>/state, prefilled, requested in turn; every PUT is by one writer (anonymous),\n", keySpace)
	fmt.Fprintln(w, "          so each key keeps one sibling; each lock connection has its own lock name bench/L<conn>: no contention")
	if hasArm(in.arms, "memsync-get-cached") {
		fmt.Fprintln(w, "          memsync-get-cached reads every key once (unmeasured) before each measurement; cache size: memsync's default")
	}
	if hasArm(in.arms, "memsync-batch100") {
		fmt.Fprintf(w, "          memsync-batch100 cycles over %d bodies of %d puts to distinct keys bench/b<i>/k<j>: %d keys\n",
			batchBodies, batchOps, batchBodies*batchOps)
	}
	if hasArm(in.arms, "watch-fanout") {
		fmt.Fprintf(w, "watch:    %d SSE watchers (Go, child process) on one pattern, all opened before writing; PUTs at %d/s open loop\n",
			o.watchers, o.watchRate)
		fmt.Fprintf(w, "          for %v per round from another child over %d connections, to %d keys fan/<run>/k<n>; latency from each\n",
			min(o.duration, o.watchDuration), o.conns, fanKeys)
		fmt.Fprintf(w, "          write's sending (and its due time) to its arrival; writes due after %d× that are not made;\n", fanWriteMax)
		fmt.Fprintln(w, "          RSS: memsync's peak VmRSS over the round, its cache filled first")
	}
	if o.rounds < 3 {
		fmt.Fprintln(w, "note:     fewer than 3 rounds: BENCH.md asks for at least 3 before quoting a ratio")
	}

	fmt.Fprintln(w)
	// Numbers are padded to one width so that they line up on the right in
	// tabwriter's left-aligned columns.
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\t\t\t\t\t\t%-20s\t\t\n", "  CPU µs/op")
	fmt.Fprintf(tw, "arm\ttool\t%8s\t%8s\t%8s\tunit\t%6s %6s %6s\tbusy\twhat\n", "median", "min", "max", "gen", "server", "redis")
	for _, a := range in.arms {
		ss := in.samples[a.name]
		r := rates(ss)
		fmt.Fprintf(tw, "%s\t%s\t%8s\t%8s\t%8s\t%s\t%6s %6s %6s\t%4s\t%s\n", a.name, in.tool(a),
			thousands(median(r)), thousands(slices.Min(r)), thousands(slices.Max(r)), a.unit,
			medianCPU(ss, func(s sample) float64 { return s.genCPU }),
			medianCPU(ss, func(s sample) float64 { return s.serverCPU }),
			medianCPU(ss, func(s sample) float64 { return s.redisCPU }),
			medianPercent(ss), a.what)
	}
	tw.Flush()
	fmt.Fprintln(w, "CPU µs/op: CPU time per operation of the load generator, the server and redis-server (medians);")
	fmt.Fprintln(w, "busy: the share of all CPUs those three used; the rest idled or went to other processes.")

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "memsync\tbaseline\tratio\tmin–max\ttarget\tresult\twhat")
	for _, c := range comparisons {
		if _, ok := in.samples[c.arm]; !ok {
			continue
		}
		if len(c.bases) == 0 { // an absolute target
			r := rates(in.samples[c.arm])
			m := median(r)
			fmt.Fprintf(tw, "%s\t(absolute)\t%s\t%s–%s\t≥ %s\t%s\t%s\n", c.arm, thousands(m),
				thousands(slices.Min(r)), thousands(slices.Max(r)), thousands(c.target), verdict(m >= c.target), c.what)
			continue
		}
		base := ""
		for _, b := range c.bases {
			if _, ok := in.samples[b]; ok && in.tool(armByName(b)) == in.tool(armByName(c.arm)) {
				base = b
				break
			}
		}
		if base == "" {
			why := strings.Join(c.bases, " or ") + " not measured on the same generator"
			switch {
			case armByName(c.bases[0]).needs == "etcd" && slices.Contains(in.notes, etcdMissingNote):
				why = "etcd not installed"
			case !slices.ContainsFunc(c.bases, func(b string) bool { _, ok := in.samples[b]; return ok }):
				why = strings.Join(c.bases, " or ") + " not measured (-only)"
			}
			fmt.Fprintf(tw, "%s\t—\t\t\t\tskipped\t%s: %s\n", c.arm, c.what, why)
			continue
		}
		ratios := make([]float64, len(in.samples[c.arm]))
		for i, s := range in.samples[c.arm] {
			ratios[i] = s.rate / in.samples[base][i].rate // same round: same conditions
		}
		m := median(ratios)
		target, result := "—", "info"
		if c.target > 0 {
			target = fmt.Sprintf("≥ %.2f", c.target)
			result = verdict(m >= c.target)
		}
		// Two decimals, or three where two would round a miss up to the
		// target (or a pass down to it).
		f := "%.2f"
		if c.target > 0 && fmt.Sprintf("%.2f", m) == fmt.Sprintf("%.2f", c.target) {
			f = "%.3f"
		}
		fmt.Fprintf(tw, "%s\t%s\t"+f+"\t"+f+"–"+f+"\t%s\t%s\t%s\n", c.arm, base, m, slices.Min(ratios), slices.Max(ratios), target, result, c.what)
	}
	if ss := in.samples["watch-fanout"]; len(ss) > 0 {
		fan := func(of func(*fanSample) float64) []float64 {
			xs := make([]float64, len(ss))
			for i, s := range ss {
				xs[i] = of(s.fan)
			}
			return xs
		}
		delivered := fan(func(f *fanSample) float64 { return f.deliveredPct() })
		p50 := fan(func(f *fanSample) float64 { return f.P50Ms })
		p99 := fan(func(f *fanSample) float64 { return f.P99Ms })
		dueP99 := fan(func(f *fanSample) float64 { return f.DueP99Ms })
		wrate := fan(func(f *fanSample) float64 { return f.writeRate() })
		rss := fan(func(f *fanSample) float64 { return f.rssMB })
		row := func(value string, xs []float64, format func(float64) string, target, result, what string) {
			fmt.Fprintf(tw, "watch-fanout\t(absolute)\t%s\t%s–%s\t%s\t%s\t%s\n",
				value, format(slices.Min(xs)), format(slices.Max(xs)), target, result, what)
		}
		pct := func(x float64) string { return fmt.Sprintf("%.3f%%", x) }
		ms := func(x float64) string { return fmt.Sprintf("%.1f", x) }
		minDelivered := slices.Min(delivered)
		row(pct(minDelivered), delivered, pct, "= 100%", verdict(minDelivered >= 100),
			fmt.Sprintf("events delivered to %d watchers (the lowest round; every round must deliver all)", in.opts.watchers))
		row(ms(median(p50))+" ms", p50, ms, "—", "info", "delivery latency p50, from each write's sending (median of rounds)")
		row(ms(median(p99))+" ms", p99, ms, "≤ 50 ms", verdict(median(p99) <= 50), "delivery latency p99, from each write's sending (median of rounds)")
		row(ms(median(dueP99))+" ms", dueP99, ms, "—", "info", "delivery latency p99, from each write's due time: open loop, counts writes sent late")
		// The load itself: a writer held back by slow acknowledgements did
		// not write at the rate the test asks for.
		minRate, want := slices.Min(wrate), 0.99*float64(in.opts.watchRate)
		row(thousands(minRate), wrate, thousands, "≥ "+thousands(want), verdict(minRate >= want),
			fmt.Sprintf("writes/s the writer sustained, of %s/s asked (the lowest round)", thousands(float64(in.opts.watchRate))))
		maxRSS := slices.Max(rss)
		row(ms(maxRSS)+" MB", rss, ms, "≤ 150 MB", verdict(maxRSS <= 150),
			fmt.Sprintf("memsync peak RSS, %d watchers open, cache full (the highest round)", in.opts.watchers))
	}
	tw.Flush()
	if ss := in.samples["memsync-get-cached"]; len(ss) > 0 {
		var hits []float64
		for _, s := range ss {
			if s.hitOK {
				hits = append(hits, 100*s.hitRate)
			}
		}
		if len(hits) > 0 {
			fmt.Fprintf(w, "memsync-get-cached: %.2f%% of its reads were cache hits (the lowest round)\n", slices.Min(hits))
		}
	}
	if ss := in.samples["watch-fanout"]; len(ss) > 0 {
		for i, s := range ss {
			f := s.fan
			fmt.Fprintf(w, "watch-fanout round %d: %d of %d writes made in %.2f s (sent up to %.1f ms late), %d watchers opened in %.2f s; delivered %d of %d (%d watchers complete, fewest %d/%d), %d resets, %d duplicates, %d streams ended;\n"+
				"                      latency from sending p50 %.1f, p99 %.1f, p99.9 %.1f, max %.1f ms; from due time p50 %.1f, p99 %.1f, max %.1f ms; peak RSS %.1f MB; cache %d/%d entries\n",
				i+1, f.Writes, f.Scheduled, f.WriteSeconds, f.MaxLagMs, f.Watchers, f.ConnectSeconds, f.Delivered, f.Expected, f.Complete, f.MinDelivered, f.Writes,
				f.Resets, f.Duplicates, f.Ended, f.P50Ms, f.P99Ms, f.P999Ms, f.MaxMs, f.DueP50Ms, f.DueP99Ms, f.DueMaxMs, f.rssMB, f.cacheEntries, f.cacheMax)
		}
	}
	fmt.Fprintln(w)
}

// verdict is the result column for a target.
func verdict(pass bool) string {
	if pass {
		return "PASS"
	}
	return "MISS"
}

// hasArm reports whether the arm called name is among as.
func hasArm(as []*arm, name string) bool {
	return slices.ContainsFunc(as, func(a *arm) bool { return a.name == name })
}

// medianPercent formats the median share of the CPUs the arm kept busy.
func medianPercent(ss []sample) string {
	var xs []float64
	for _, s := range ss {
		if s.cpuOK {
			xs = append(xs, s.busy)
		}
	}
	if len(xs) == 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f%%", 100*median(xs))
}

// median of rates; the mean of the middle two for an even count.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// thousands formats a rate as a whole number with thousands separators.
func thousands(x float64) string {
	s := strconv.FormatInt(int64(x+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// commandLine is how to run this again: "go run ./cmd/bench" when run so.
func commandLine(args []string) string {
	self := os.Args[0]
	if exe, err := os.Executable(); err == nil && strings.Contains(exe, "go-build") {
		self = "go run ./cmd/bench"
	}
	parts := []string{self}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$") {
			a = strconv.Quote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "CPU model unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "CPU model unknown"
}

// loadAverage shows whether something else ran meanwhile.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func redisVersion() string {
	out, _ := exec.Command("redis-server", "--version").Output()
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return "(version unknown)"
}

func wrkVersion() string {
	out, _ := exec.Command("wrk", "-v").CombinedOutput() // prints its version and usage, exits 1
	line, _, _ := strings.Cut(string(out), "\n")
	f := strings.Fields(line)
	if len(f) >= 2 && f[0] == "wrk" {
		return f[1]
	}
	return "(version unknown)"
}
