package http

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

// racingStore writes the key itself right after the first read of it, as
// another worker would between a PATCH's read and its write.
type racingStore struct {
	*store.Store
	t     *testing.T
	raced bool
}

func (s *racingStore) Get(ctx context.Context, ns, key string, opt store.GetOptions) (store.Entry, error) {
	e, err := s.Store.Get(ctx, ns, key, opt)
	if !s.raced {
		s.raced = true
		if _, err := s.Store.Put(ctx, ns, key, store.PutRequest{Value: []byte(`{"racer":true}`), Writer: "racer", Context: e.Version}); err != nil {
			s.t.Fatal(err)
		}
	}
	return e, err
}

// A key written between a patch's read and its write fails the write's
// compare-and-set; the patch is then applied again to the new value, unless
// the request's If-Match named the etag it read.
func TestPatchIsAppliedAgainWhenTheKeyChanged(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		base, err := store.New(b.Client, store.Config{})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if _, err := base.Put(ctx, "ns", "k", store.PutRequest{Value: []byte(`{"a":1}`), Writer: "w1"}); err != nil {
			t.Fatal(err)
		}
		apply, _, err := readPatch(patchRequest(t, `{"patched":true}`), 64)
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{MaxBodyBytes: 1 << 20, MaxDepth: 64}
		p := patcher{cfg: cfg, st: &racingStore{Store: base, t: t}, ns: "ns", key: "k", put: store.PutRequest{Writer: "w2"}, apply: apply}
		res, err := p.run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(res.Value); got != `{"racer":true,"patched":true}` {
			t.Errorf("value = %s, want the racer's write patched", got)
		}

		p.st, p.put.IfMatch = &racingStore{Store: base, t: t}, res.ETag
		if _, err := p.run(ctx); !errors.Is(err, store.ErrPreconditionFailed) {
			t.Errorf("with If-Match, after a racing write: %v, want ErrPreconditionFailed", err)
		}
	})
}

func patchRequest(t *testing.T, body string) *http.Request {
	t.Helper()
	return httptest.NewRequest(http.MethodPatch, "/v1/kv/k", strings.NewReader(body))
}
