package main

import (
	"strings"
	"testing"
)

// A comparison whose baseline did not run says why: etcd missing from the
// machine, or the baseline left out by -only.
func TestReportSaysWhyAComparisonWasSkipped(t *testing.T) {
	for _, tt := range []struct {
		name  string
		notes []string
		want  string
	}{
		{"etcd missing", []string{etcdMissingNote}, "PUT vs etcd put: etcd not installed"},
		{"left out", nil, "PUT vs etcd put: etcd-put not measured (-only)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			put := armByName("memsync-put")
			var out strings.Builder
			report(&out, reportInput{
				opts: options{rounds: 1, conns: 32}, arms: []*arm{put},
				tool:    func(*arm) string { return "go" },
				samples: map[string][]sample{put.name: {{rate: 30_000}}},
				notes:   tt.notes,
			})
			if !strings.Contains(out.String(), tt.want) {
				t.Errorf("report:\n%s\nwant a line with %q", out.String(), tt.want)
			}
		})
	}
}
