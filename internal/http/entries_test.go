package http_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
)

// listing is the body of GET /v1/keys?entries=true.
type listing struct {
	Keys    []string          `json:"keys"`
	Entries []json.RawMessage `json:"entries"`
	Cursor  string            `json:"cursor"`
}

func (h *harness) list(query string) listing {
	h.t.Helper()
	var l listing
	if err := json.Unmarshal(h.must(200, "GET", "/v1/keys?"+query, "").body, &l); err != nil {
		h.t.Fatal(err)
	}
	return l
}

func entryOf(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// GET /v1/keys?entries=true answers each listed key's entry as a GET of the
// key would, in the keys' order, page by page; resolve and siblings shape
// every entry.
func TestListWithEntries(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":{"status":"running"}}`, "X-Worker-Id", "w1")
		h.must(200, "PUT", "/v1/kv/tasks/T1/agents/a1", `{"value":{"step":1}}`, "X-Worker-Id", "w1")
		h.must(200, "PUT", "/v1/kv/tasks/T1/agents/a1", `{"value":{"note":"x"}}`, "X-Worker-Id", "w2") // a sibling: merged
		h.must(200, "PUT", "/v1/kv/tasks/T2/state", `{"value":"queued"}`, "X-Worker-Id", "w1")
		h.must(200, "PUT", "/v1/kv/workers/w1/status", `{"value":"idle"}`, "X-Worker-Id", "w1")

		l := h.list("prefix=tasks/T1/&entries=true")
		if got := strings.Join(l.Keys, ","); got != "tasks/T1/agents/a1,tasks/T1/state" || len(l.Entries) != 2 || l.Cursor != "" {
			t.Fatalf("listing = %+v", l)
		}
		for i, raw := range l.Entries {
			e := entryOf(t, raw)
			get := h.must(200, "GET", "/v1/kv/"+l.Keys[i]+"?consistent=true", "").json(t)
			if e["key"] != l.Keys[i] || jsonString(e["value"]) != jsonString(get["value"]) || e["etag"] != get["etag"] {
				t.Errorf("entry %d = %v, want the GET's %v", i, e, get)
			}
			if _, has := e["sibling_list"]; has {
				t.Errorf("entry %d has a sibling list unasked", i)
			}
		}
		if e := entryOf(t, l.Entries[0]); jsonString(e["value"]) != `{"note":"x","step":1}` || e["siblings"] != float64(2) {
			t.Errorf("merged entry = %v", e)
		}

		// Paging: the entries follow the keys across cursors.
		var keys, values []string
		for cursor := ""; ; {
			q := "prefix=tasks/&entries=true&limit=2"
			if cursor != "" {
				q += "&cursor=" + url.QueryEscape(cursor)
			}
			p := h.list(q)
			for i, raw := range p.Entries {
				e := entryOf(t, raw)
				if e["key"] != p.Keys[i] {
					t.Errorf("entry %d is %v's, listed as %s", i, e["key"], p.Keys[i])
				}
				values = append(values, jsonString(e["value"]))
			}
			keys = append(keys, p.Keys...)
			if cursor = p.Cursor; cursor == "" {
				break
			}
		}
		if got := strings.Join(keys, ","); got != "tasks/T1/agents/a1,tasks/T1/state,tasks/T2/state" {
			t.Errorf("paged keys = %s", got)
		}
		if got := strings.Join(values, ","); got != `{"note":"x","step":1},{"status":"running"},"queued"` {
			t.Errorf("paged values = %s", got)
		}

		l = h.list("prefix=tasks/T1/agents/&entries=true&resolve=siblings")
		if e := entryOf(t, l.Entries[0]); e["value"] != nil || len(e["sibling_list"].([]any)) != 2 {
			t.Errorf("resolve=siblings entry = %v", e)
		}
		l = h.list("prefix=tasks/T1/agents/&entries=true&siblings=true")
		if e := entryOf(t, l.Entries[0]); e["value"] == nil || len(e["sibling_list"].([]any)) != 2 {
			t.Errorf("siblings=true entry = %v", e)
		}

		// Nothing under the prefix: an empty list of entries, not none.
		if body := string(h.must(200, "GET", "/v1/keys?prefix=nothing/&entries=true", "").body); !strings.Contains(body, `"entries":[]`) {
			t.Errorf("empty listing = %s", body)
		}
		if body := string(h.must(200, "GET", "/v1/keys?prefix=tasks/", "").body); strings.Contains(body, "entries") {
			t.Errorf("listing without entries=true = %s", body)
		}
		for _, bad := range []string{"entries=maybe", "siblings=true", "resolve=max", "entries=true&resolve=best"} {
			if p := h.must(400, "GET", "/v1/keys?"+bad, "").json(t); p["code"] != "invalid_argument" {
				t.Errorf("GET /v1/keys?%s: code %v, want invalid_argument", bad, p["code"])
			}
		}
	})
}

// A page of entries ends early, with a cursor after its last entry, once
// its values pass 4 MiB; the next page goes on from there.
func TestListWithEntriesIsBoundedBySize(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	big := strings.Repeat("x", 900<<10)
	for i := range 6 {
		h.must(200, "PUT", fmt.Sprintf("/v1/kv/blobs/b%d", i), `{"value":"`+big+`"}`)
	}
	first := h.list("prefix=blobs/&entries=true&limit=10")
	if len(first.Keys) != 5 || len(first.Entries) != 5 || first.Cursor == "" { // 5 × 900 KiB passes 4 MiB
		t.Fatalf("first page: %d keys, %d entries, cursor %q; want 5, 5 and a cursor", len(first.Keys), len(first.Entries), first.Cursor)
	}
	rest := h.list("prefix=blobs/&entries=true&limit=10&cursor=" + url.QueryEscape(first.Cursor))
	if strings.Join(rest.Keys, ",") != "blobs/b5" || len(rest.Entries) != 1 || rest.Cursor != "" {
		t.Errorf("second page: keys %v, %d entries, cursor %q", rest.Keys, len(rest.Entries), rest.Cursor)
	}
	if e := entryOf(t, rest.Entries[0]); e["value"] != big {
		t.Error("the second page's value is not the one written")
	}
}
