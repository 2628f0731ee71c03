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
}

// sample is one arm's measurement in one round.
type sample struct {
	rate float64 // operations per second
	// CPU µs per operation of the load generator, the server process and
	// redis-server, and the share of all CPUs the three used together; cpuOK
	// is false where /proc could not be read.
	genCPU, serverCPU, redisCPU, busy float64
	cpuOK                             bool
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
	fmt.Fprintf(w, "machine:  %d CPUs, %s, load average %s before the run\n", runtime.NumCPU(), cpuModel(), in.load)
	gen := "Go generator (wrk not used)"
	if in.useWrk {
		gen = "wrk " + wrkVersion()
	}
	fmt.Fprintf(w, "software: %s %s/%s; redis-server %s, no persistence (--save \"\" --appendonly no); %s\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, redisVersion(), gen)
	fmt.Fprintf(w, "load:     closed loop, %d connections, %v per arm per round, %d rounds of every arm in turn, %v warm-up\n",
		o.conns, o.duration, o.rounds, o.warmup)
	if in.useWrk {
		fmt.Fprintf(w, "          wrk -t1 -c%d -d%s -s <arm>.lua for one-request arms; *-go and lock arms on the Go generator\n",
			o.conns, wrkDuration(o.duration))
	}
	fmt.Fprintf(w, "keys:     %d keys tasks/T<i>/state, prefilled, requested in turn; every PUT is by one writer (anonymous),\n", keySpace)
	fmt.Fprintln(w, "          so each key keeps one sibling; each lock connection has its own lock name bench/L<conn>: no contention")
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
		base := ""
		for _, b := range c.bases {
			if _, ok := in.samples[b]; ok && in.tool(armByName(b)) == in.tool(armByName(c.arm)) {
				base = b
				break
			}
		}
		if base == "" {
			fmt.Fprintf(tw, "%s\t—\t\t\t\tskipped\t%s: %s not measured on the same generator\n", c.arm, c.what, strings.Join(c.bases, " or "))
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
			result = "MISS"
			if m >= c.target {
				result = "PASS"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f–%.2f\t%s\t%s\t%s\n", c.arm, base, m, slices.Min(ratios), slices.Max(ratios), target, result, c.what)
	}
	tw.Flush()
	fmt.Fprintln(w)
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
