package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBenchFields(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		k := rng.Int64N(1 << 20)
		due := time.Now().UnixNano() + rng.Int64N(1e12) - 5e11
		sent := due + rng.Int64N(1e9)
		line := fmt.Sprintf(`data: {"id":%d,"type":"put","key":"fan/x/k1","value":{"bench_n":%d,"bench_t":%d,"bench_s":%d}}`, k+1, k, due, sent)
		gk, gd, gs, ok := benchFields([]byte(line))
		if !ok || gk != k || gd != due || gs != sent {
			t.Fatalf("%s: got %d %d %d %v", line, gk, gd, gs, ok)
		}
		if _, _, _, ok := benchFieldsExact([]byte(line)); !ok { // the writer's layout: the fast path
			t.Fatalf("%s: not read by benchFieldsExact", line)
		}
	}
	for _, line := range []string{
		`data: {"value":{"bench_n":1,"bench_t":2,"bench_s":3}}`,                                     // short numbers
		`data: {"value":{"bench_s":1700000000000000003,"bench_n":1,"bench_t":1700000000000000002}}`, // other order: searched
	} {
		if _, _, _, ok := benchFields([]byte(line)); !ok {
			t.Errorf("%s: not parsed", line)
		}
	}
	for _, line := range []string{
		`data: {"reason":"the watcher fell more than 256 events behind"}`,
		`data: {"value":{"bench_n":1,"bench_t":1700000000000000002,"bench_s":9999999999999999999}}`, // beyond int64
		`data: {"value":{"bench_x":1,"bench_t":1700000000000000002,"bench_s":1700000000000000003}}`, // no bench_n
		`data: {"value":{"bench_n":,"bench_t":1700000000000000002,"bench_s":1700000000000000003}}`,  // an empty one
	} {
		if k, d, s, ok := benchFields([]byte(line)); ok {
			t.Errorf("%s: parsed as %d %d %d", line, k, d, s)
		}
	}
}

func TestBenchFieldsExactRejects(t *testing.T) {
	for _, line := range []string{
		`data: {"value":{"bench_n":1,"bench_t":17000000000000000a2,"bench_s":1700000000000000003}}`, // not digits
		`data: {"value":{"bench_n":1,"bench_t":1700000000000000002,"bench_s":170000000000000003}}`,  // 18 digits
		`data: {"value":{"bench_n":1,"bench_x":1700000000000000002,"bench_s":1700000000000000003}}`, // no bench_t
		`data: {"value":{"bench_n":1,"bench_t":1700000000000000002,"bench_s":1700000000000000003}`,  // one brace
		`data: {"value":{"bench_n":1,"bench_t":1700000000000000002,"bench_s":9999999999999999999}}`, // beyond int64
		`"bench_t":1700000000000000002,"bench_s":1700000000000000003}}`,                             // no bench_n
	} {
		if k, d, s, ok := benchFieldsExact([]byte(line)); ok {
			t.Errorf("%s: parsed as %d %d %d", line, k, d, s)
		}
	}
}

func TestDigits8(t *testing.T) {
	for _, s := range []string{"00000000", "12345678", "99999999", "00000001", "90000000"} {
		want, _ := strconv.ParseUint(s, 10, 64)
		if got, ok := digits8([]byte(s)); !ok || got != want {
			t.Errorf("%s: %d %v", s, got, ok)
		}
	}
	for _, s := range []string{"1234567:", "/2345678", "12345a78", "1234 678", "\xff2345678", "12345\xb678"} {
		if got, ok := digits8([]byte(s)); ok {
			t.Errorf("%q: parsed as %d", s, got)
		}
	}
}

// TestWatcherReadsEveryWrite runs watchers against a stand-in for
// /v1/watch that sends n writes in batches split at random places, plain
// (read by an epoll reader) or chunked (a goroutine each), and checks that
// each counts every write once.
func TestWatcherReadsEveryWrite(t *testing.T) {
	const n = 3000
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			var stream strings.Builder
			stream.WriteString(": watching\n\n")
			now := time.Now().UnixNano()
			for k := range n {
				fmt.Fprintf(&stream, "id: %d\nevent: put\ndata: {\"id\":%d,\"value\":{\"bench_n\":%d,\"bench_t\":%d,\"bench_s\":%d}}\n\n", k+1, k+1, k, now, now)
				if k%100 == 0 {
					stream.WriteString(": ping\n\n")
				}
			}
			body := stream.String()
			release := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !chunked {
					w.Header().Set("Transfer-Encoding", "identity")
				}
				w.WriteHeader(200)
				rc := http.NewResponseController(w)
				// The opening comment first, then the rest in uneven pieces.
				first := len(": watching\n\n")
				_, _ = w.Write([]byte(body[:first]))
				_ = rc.Flush()
				<-release
				rng := rand.New(rand.NewPCG(3, 4))
				for rest := body[first:]; len(rest) > 0; {
					m := min(len(rest), 1+rng.IntN(3000))
					_, _ = w.Write([]byte(rest[:m]))
					_ = rc.Flush()
					rest = rest[m:]
				}
			}))
			defer srv.Close()
			defer srv.CloseClientConnections()

			host := strings.TrimPrefix(srv.URL, "http://")
			ws := make([]*watcher, 4)
			for i := range ws {
				ws[i] = &watcher{seen: make([]uint64, (n+63)/64), total: n, fd: -1, lat: new(latencies)}
				if err := ws[i].open(host, "/v1/watch"); err != nil {
					t.Fatal(err)
				}
				if want := !chunked && fanReaders() > 0; ws[i].raw != want {
					t.Fatalf("chunked %v: raw %v, want %v", chunked, ws[i].raw, want)
				}
			}
			var delivered atomic.Int64
			var closing atomic.Bool
			var wg sync.WaitGroup
			var loops []*readLoop
			for range min(2, fanReaders()) {
				l, err := newReadLoop()
				if err != nil {
					t.Fatal(err)
				}
				loops = append(loops, l)
			}
			for i, w := range ws {
				if w.raw {
					if err := loops[i%len(loops)].add(w); err != nil {
						t.Fatal(err)
					}
				} else {
					wg.Go(func() { w.read(&delivered, &closing) })
				}
			}
			for _, l := range loops {
				wg.Go(func() { l.run(&delivered, &closing) })
			}
			close(release)
			for deadline := time.Now().Add(10 * time.Second); delivered.Load() < int64(len(ws)*n); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("delivered %d of %d", delivered.Load(), len(ws)*n)
				}
			}
			closing.Store(true)
			for _, w := range ws {
				if w.conn != nil {
					w.conn.Close()
				}
			}
			wg.Wait()
			for _, l := range loops {
				l.close()
			}
			for i, w := range ws {
				if w.count != n || w.dups != 0 || w.resets != 0 {
					t.Errorf("watcher %d: %d writes, %d duplicates, %d resets", i, w.count, w.dups, w.resets)
				}
			}
		})
	}
}

// BenchmarkWatcherFeed parses rounds of 40 events as memsync writes them
// (20 ms of 2,000 writes/s): the watchers' child's work per event.
func BenchmarkWatcherFeed(b *testing.B) {
	const perRound = 40
	now := time.Now().UnixNano()
	var round []byte
	for k := range perRound {
		round = fmt.Appendf(round, "id: %d\nevent: put\ndata: {\"id\":%d,\"type\":\"put\",\"namespace\":\"task-sentinel\",\"key\":\"fan/f1/k%d\",\"version\":{\"anonymous\":%d},\"timestamp\":1795717285744,\"writer\":\"anonymous\",\"value\":{\"bench_n\":%d,\"bench_t\":%d,\"bench_s\":%d}}\n\n",
			k+1, k+1, k%fanKeys, k+1, k, now, now+1000)
	}
	w := &watcher{seen: make([]uint64, 1), total: perRound, lat: new(latencies)}
	b.SetBytes(int64(len(round)))
	b.ReportAllocs()
	for b.Loop() {
		clear(w.seen)
		if got := w.feed(round, now+2e6); got != perRound {
			b.Fatalf("fed %d of %d", got, perRound)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perRound), "ns/event")
}
