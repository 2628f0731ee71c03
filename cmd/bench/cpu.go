package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// The CPU each process spends per operation says where an arm's time goes:
// in the load generator, the HTTP server, or Redis (single-threaded, so its
// CPU per operation bounds the rate however many cores there are). When
// generator, server and Redis share two saturated cores, the rates of two
// arms stand roughly in the inverse ratio of their total CPU per operation,
// which makes these the place to look when a ratio misses.

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every
// Linux architecture Go runs on.
const clockTicks = 100

// cpuSeconds is the user + system CPU time that process pid has used, over
// all its threads; false where there is no /proc.
func cpuSeconds(pid int) (float64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may itself hold spaces and
	// parentheses: the fields are counted from after the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseFloat(f[11], 64) // field 14 of proc(5)
	stime, err2 := strconv.ParseFloat(f[12], 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return (utime + stime) / clockTicks, true
}

// cpuMeter measures the CPU two processes use during a measurement.
type cpuMeter struct {
	server, redis int // pids
	s0, r0        float64
	ok            bool
}

func startCPU(server, redis int) *cpuMeter {
	m := &cpuMeter{server: server, redis: redis}
	var ok1, ok2 bool
	m.s0, ok1 = cpuSeconds(server)
	m.r0, ok2 = cpuSeconds(redis)
	m.ok = ok1 && ok2
	return m
}

// since returns the CPU seconds the server and Redis used since startCPU;
// false when it could not be read.
func (m *cpuMeter) since() (server, redis float64, ok bool) {
	s1, ok1 := cpuSeconds(m.server)
	r1, ok2 := cpuSeconds(m.redis)
	if !m.ok || !ok1 || !ok2 {
		return 0, 0, false
	}
	return s1 - m.s0, r1 - m.r0, true
}

// processCPU is the CPU time an ended child process used, in seconds.
func processCPU(cmd *exec.Cmd) float64 {
	if cmd.ProcessState == nil {
		return 0
	}
	return (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
}
