package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// wrkScript is the Lua that makes wrk send a one-request arm's requests:
// the same paths, cycling over the arm's keys, and the same bodies as the
// Go generator sends. With -t1 there is one Lua state, so the counter is
// shared by all connections.
func wrkScript(a *arm) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "-- %s: %s\n", a.name, a.what)
	b.WriteString("local i = 0\n")
	switch {
	case a.bodyOf != nil:
		// Every body, built once: wrk's Lua then only picks one per request.
		b.WriteString("local headers = {[\"Content-Type\"] = \"application/json\"}\nlocal bodies = {\n")
		for i := range a.cycle() {
			body := a.bodyOf(i)
			if strings.Contains(body, "]==]") {
				return "", fmt.Errorf("%s: body %d holds the Lua long bracket ]==]", a.name, i)
			}
			fmt.Fprintf(&b, "[==[%s]==],\n", body)
		}
		b.WriteString("}\n")
	case a.body != "":
		// A long bracket needs no escaping; no body here contains "]]".
		fmt.Fprintf(&b, "local headers = {[\"Content-Type\"] = \"application/json\"}\nlocal body = [[%s]]\n", a.body)
	default:
		b.WriteString("local headers, body = nil, nil\n")
	}
	fmt.Fprintf(&b, "request = function()\n  i = (i + 1) %% %d\n", a.cycle())
	if a.bodyOf != nil {
		b.WriteString("  local body = bodies[i + 1]\n")
	}
	if a.fixedPath {
		fmt.Fprintf(&b, "  return wrk.format(%q, %q, headers, body)\nend\n", a.method, a.prefix)
	} else {
		fmt.Fprintf(&b, "  return wrk.format(%q, %q .. i .. %q, headers, body)\nend\n", a.method, a.prefix, a.suffix)
	}
	return b.String(), nil
}

// wrkScripts writes every one-request arm's script into dir and returns
// their paths by arm name.
func wrkScripts(dir string, as []*arm) (map[string]string, error) {
	paths := make(map[string]string)
	for _, a := range as {
		if a.goOnly {
			continue
		}
		script, err := wrkScript(a)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, a.name+".lua")
		if err := os.WriteFile(p, []byte(script), 0o644); err != nil {
			return nil, err
		}
		paths[a.name] = p
	}
	return paths, nil
}

var (
	wrkRate    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// runWrk runs wrk with script against baseURL and returns its requests per
// second and the CPU seconds wrk used. Any failed request fails the run: a
// rate of errors is no speed.
func runWrk(script, baseURL string, conns int, d time.Duration) (rate, cpu float64, err error) {
	args := []string{"-t1", "-c" + strconv.Itoa(conns), "-d" + wrkDuration(d), "-s", script, baseURL}
	cmd := exec.Command("wrk", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("wrk %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	cpu = processCPU(cmd)
	if m := wrkNon2xx.FindSubmatch(out); m != nil && string(m[1]) != "0" {
		return 0, 0, fmt.Errorf("wrk %s: %s non-2xx responses\n%s", strings.Join(args, " "), m[1], out)
	}
	if m := wrkSockErr.FindSubmatch(out); m != nil {
		for _, n := range m[1:] {
			if string(n) != "0" {
				return 0, 0, fmt.Errorf("wrk %s: socket errors\n%s", strings.Join(args, " "), out)
			}
		}
	}
	m := wrkRate.FindSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("wrk %s: no Requests/sec in its output\n%s", strings.Join(args, " "), out)
	}
	rate, err = strconv.ParseFloat(string(m[1]), 64)
	return rate, cpu, err
}

// wrkDuration formats d for wrk, which takes whole seconds ("5s").
func wrkDuration(d time.Duration) string {
	return strconv.Itoa(int(d/time.Second)) + "s"
}
