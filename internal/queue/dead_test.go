package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/queue"
	"github.com/memsync/memsync/internal/redistest"
)

// A message claimed as many times as its MaxAttempts allows goes to the
// dead letters when it would be claimed again, and the claim takes the
// next message instead; dead letters are read in pages, given back and
// dropped.
func TestQueueDeadLetters(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		q := newQueues(t, b)
		ctx := context.Background()
		add := func(value string, most int) queue.Message {
			t.Helper()
			m, _, err := q.Enqueue(ctx, ns, "jobs", queue.EnqueueRequest{Value: json.RawMessage(value), MaxAttempts: most})
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		poison := add(`"poison"`, 2)
		if poison.MaxAttempts != 2 {
			t.Fatalf("enqueued %+v, want MaxAttempts 2", poison)
		}
		var last queue.Message
		for attempt := 1; attempt <= 2; attempt++ {
			got := claim(t, q, "jobs", queue.ClaimRequest{Visibility: 30 * time.Millisecond, Owner: "w1"})
			if values(got) != `["poison"]` || got[0].Attempts != attempt || got[0].MaxAttempts != 2 {
				t.Fatalf("claim %d = %+v", attempt, got)
			}
			last = got[0]
			time.Sleep(60 * time.Millisecond) // the claim lapses: its worker crashed
		}
		healthy := add(`"healthy"`, 0)
		// The third claim would be poison's third attempt: it goes to the
		// dead letters, and the claim gets the next message.
		got := claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute})
		if values(got) != `["healthy"]` || got[0].ID != healthy.ID || got[0].MaxAttempts != 0 {
			t.Fatalf("claim past the dead message = %+v", got)
		}
		if s, err := q.Stats(ctx, ns, "jobs"); err != nil || s != (queue.Stats{InFlight: 1, Dead: 1}) {
			t.Fatalf("Stats = %+v, %v", s, err)
		}
		// A dead letter is held by no receipt, not even its last claim's.
		if err := q.Ack(ctx, ns, "jobs", poison.ID, last.Receipt); !errors.Is(err, queue.ErrNotClaimed) {
			t.Fatalf("ack of a dead letter: %v, want ErrNotClaimed", err)
		}
		if err := q.Release(ctx, ns, "jobs", poison.ID, last.Receipt, 0); !errors.Is(err, queue.ErrNotClaimed) {
			t.Fatalf("release of a dead letter: %v, want ErrNotClaimed", err)
		}
		dead, total, err := q.Dead(ctx, ns, "jobs", "", 10)
		if err != nil || total != 1 || len(dead) != 1 {
			t.Fatalf("Dead = %+v, %d, %v", dead, total, err)
		}
		d := dead[0]
		if d.ID != poison.ID || string(d.Value) != `"poison"` || d.Attempts != 2 || d.MaxAttempts != 2 ||
			d.Owner != "w1" || d.Receipt != "" || time.Since(d.DeadAt) > time.Minute || !d.EnqueuedAt.Equal(poison.EnqueuedAt) {
			t.Fatalf("dead letter = %+v", d)
		}
		if c := q.Counters(); c.Dead != 1 || c.Claimed != 3 {
			t.Errorf("Counters = %+v, want 1 dead of 3 claims", c)
		}

		// Given back, it starts its attempts again.
		n, left, err := q.Redrive(ctx, ns, "jobs", []string{poison.ID, healthy.ID}, 0)
		if err != nil || n != 1 || left != 0 {
			t.Fatalf("Redrive = %d, %d left, %v; want the one dead letter (not the claimed one)", n, left, err)
		}
		again := claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute})
		if values(again) != `["poison"]` || again[0].Attempts != 1 || again[0].MaxAttempts != 2 {
			t.Fatalf("claim after redrive = %+v", again)
		}
		if err := q.Ack(ctx, ns, "jobs", again[0].ID, again[0].Receipt); err != nil {
			t.Fatal(err)
		}

		// A message released as often as it may be claimed dies too.
		once := add(`"once"`, 1)
		c := claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute, Owner: "w9"})
		if err := q.Release(ctx, ns, "jobs", c[0].ID, c[0].Receipt, 0); err != nil {
			t.Fatal(err)
		}
		if none := claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute}); len(none) != 0 {
			t.Fatalf("claim after the only attempt was released = %s", values(none))
		}
		// Released, then dead: it still names its last claimant.
		if dead, _, err := q.Dead(ctx, ns, "jobs", "", 10); err != nil || len(dead) != 1 || dead[0].Owner != "w9" {
			t.Fatalf("dead letter after a release = %+v, %v; want its claimant w9", dead, err)
		}
		if err := q.DropDead(ctx, ns, "jobs", once.ID); err != nil {
			t.Fatal(err)
		}
		if err := q.DropDead(ctx, ns, "jobs", once.ID); !errors.Is(err, queue.ErrNotDead) {
			t.Fatalf("second drop: %v, want ErrNotDead", err)
		}
		if err := q.DropDead(ctx, ns, "jobs", healthy.ID); !errors.Is(err, queue.ErrNotDead) {
			t.Fatalf("drop of a claimed message: %v, want ErrNotDead", err)
		}
		if s, _ := q.Stats(ctx, ns, "jobs"); s != (queue.Stats{InFlight: 1}) {
			t.Fatalf("Stats at the end = %+v, want only healthy in flight", s)
		}
		if c := q.Counters(); c.Dead != 2 || c.Redriven != 1 {
			t.Errorf("Counters = %+v, want 2 dead, 1 redriven", c)
		}
	})
}

// One claim may move many dead messages on its way to live ones; dead
// letters read in pages by cursor, and redrive oldest first by count.
func TestQueueDeadLetterPages(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		q := newQueues(t, b)
		ctx := context.Background()
		for i := range 7 {
			if _, _, err := q.Enqueue(ctx, ns, "jobs", queue.EnqueueRequest{Value: json.RawMessage(fmt.Sprint(i)), MaxAttempts: 1}); err != nil {
				t.Fatal(err)
			}
		}
		first := claim(t, q, "jobs", queue.ClaimRequest{Visibility: 20 * time.Millisecond, Max: 7})
		if len(first) != 7 {
			t.Fatalf("first claim took %d", len(first))
		}
		enqueue(t, q, "jobs", `"live"`, 0)
		time.Sleep(50 * time.Millisecond)
		got := claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute, Max: 2})
		if values(got) != `["live"]` {
			t.Fatalf("claim past 7 dead = %s", values(got))
		}
		var read []string
		cursor := ""
		for range 4 {
			page, total, err := q.Dead(ctx, ns, "jobs", cursor, 3)
			if err != nil || total != 7 {
				t.Fatalf("Dead after %q = %d, %v", cursor, total, err)
			}
			if len(page) == 0 {
				break
			}
			for _, m := range page {
				read = append(read, string(m.Value))
			}
			cursor = page[len(page)-1].ID
		}
		if fmt.Sprint(read) != "[0 1 2 3 4 5 6]" {
			t.Fatalf("pages read %v, want every dead letter once, in order", read)
		}
		n, left, err := q.Redrive(ctx, ns, "jobs", nil, 5)
		if err != nil || n != 5 || left != 2 {
			t.Fatalf("Redrive 5 = %d, %d left, %v", n, left, err)
		}
		back := claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute, Max: 10})
		if values(back) != "[0 1 2 3 4]" {
			t.Fatalf("claim after redrive = %s, want the 5 oldest", values(back))
		}
		if n, err := q.Purge(ctx, ns, "jobs"); err != nil || n != 8 {
			t.Fatalf("Purge = %d, %v; want 1+5 in flight and 2 dead", n, err)
		}
		if _, total, _ := q.Dead(ctx, ns, "jobs", "", 10); total != 0 {
			t.Fatalf("%d dead letters after Purge", total)
		}
	})
}

// An enqueue sent again under its idempotency key adds nothing and answers
// the first one's message; the same key for another message is refused;
// keys are forgotten after the window, lapsed ones by later enqueues.
func TestQueueEnqueueIdempotency(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		q := queue.New(b.Client, queue.Options{DedupWindow: time.Second})
		t.Cleanup(func() { _ = q.Close() })
		ctx := context.Background()
		req := queue.EnqueueRequest{Value: json.RawMessage(`{"task":"T1"}`), Delay: time.Hour, MaxAttempts: 3, IdempotencyKey: "send-T1"}
		m1, replayed, err := q.Enqueue(ctx, ns, "jobs", req)
		if err != nil || replayed {
			t.Fatalf("first = %+v, %v, %v", m1, replayed, err)
		}
		m2, replayed, err := q.Enqueue(ctx, ns, "jobs", req)
		if err != nil || !replayed || m2.ID != m1.ID || !m2.EnqueuedAt.Equal(m1.EnqueuedAt) || !m2.VisibleAt.Equal(m1.VisibleAt) {
			t.Fatalf("again = %+v, replayed %v, %v; want %+v", m2, replayed, err, m1)
		}
		for _, other := range []queue.EnqueueRequest{
			{Value: json.RawMessage(`{"task":"T2"}`), Delay: time.Hour, MaxAttempts: 3, IdempotencyKey: "send-T1"},
			{Value: req.Value, MaxAttempts: 3, IdempotencyKey: "send-T1"},
			{Value: req.Value, Delay: time.Hour, IdempotencyKey: "send-T1"},
		} {
			if _, _, err := q.Enqueue(ctx, ns, "jobs", other); !errors.Is(err, queue.ErrIdempotencyMismatch) || !errors.Is(err, queue.ErrInvalidArgument) {
				t.Fatalf("key reused for %+v: %v, want ErrIdempotencyMismatch", other, err)
			}
		}
		// The same key on another queue is another key.
		if _, replayed, err := q.Enqueue(ctx, ns, "other", req); err != nil || replayed {
			t.Fatalf("same key, other queue: replayed %v, %v", replayed, err)
		}
		if s, _ := q.Stats(ctx, ns, "jobs"); s != (queue.Stats{Delayed: 1}) {
			t.Fatalf("Stats = %+v, want the one message", s)
		}
		if c := q.Counters(); c.Enqueued != 2 || c.Replayed != 1 {
			t.Errorf("Counters = %+v", c)
		}

		_, _, err = q.Enqueue(ctx, ns, "jobs", queue.EnqueueRequest{Value: json.RawMessage(`1`), IdempotencyKey: "lapses"})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1200 * time.Millisecond) // both backends run on real time
		m3, replayed, err := q.Enqueue(ctx, ns, "jobs", req)
		if err != nil || replayed || m3.ID == m1.ID {
			t.Fatalf("after the window = %+v, replayed %v, %v; want a new message", m3, replayed, err)
		}
		// That enqueue forgot every lapsed key, not only its own.
		kept, err := b.Client.Eval(ctx, `return {redis.call('HEXISTS', KEYS[1], 'k:lapses'),
			redis.call('HEXISTS', KEYS[1], 'k:send-T1'), redis.call('ZCARD', KEYS[2])}`,
			[]string{"ms:{test/queues/jobs}#queue-messages", "ms:{test/queues/jobs}#queue-dedup"}).Int64Slice()
		if err != nil || fmt.Sprint(kept) != "[0 1 1]" {
			t.Fatalf("k:lapses, k:send-T1, keys remembered = %v, %v; want [0 1 1]", kept, err)
		}
	})
}

// Copies of one keyed enqueue racing on two Queues add one message.
func TestQueueEnqueueIdempotentUnderRace(t *testing.T) {
	b := redistest.Real(t)
	qs := []*queue.Queues{newQueues(t, b), newQueues(t, b)}
	ctx := context.Background()
	const copies = 8
	ids := make([]string, copies)
	var replays sync.Map
	var wg sync.WaitGroup
	for i := range copies {
		wg.Go(func() {
			m, replayed, err := qs[i%2].Enqueue(ctx, ns, "race", queue.EnqueueRequest{Value: json.RawMessage(`"x"`), IdempotencyKey: "once"})
			if err != nil {
				t.Error(err)
			}
			ids[i] = m.ID
			replays.Store(i, replayed)
		})
	}
	wg.Wait()
	added := 0
	replays.Range(func(_, v any) bool {
		if !v.(bool) {
			added++
		}
		return true
	})
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("ids %v, want one", ids)
		}
	}
	if s, _ := qs[0].Stats(ctx, ns, "race"); added != 1 || s.Visible != 1 {
		t.Fatalf("%d copies added, %d visible; want 1 and 1", added, s.Visible)
	}
}

// Queues lists the queues enqueued to, by prefix, with their counts,
// until they are purged.
func TestQueueListing(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		q := newQueues(t, b)
		ctx := context.Background()
		if infos, err := q.Queues(ctx, ns, ""); err != nil || len(infos) != 0 {
			t.Fatalf("Queues of a new namespace = %+v, %v", infos, err)
		}
		enqueue(t, q, "mail", `1`, 0)
		enqueue(t, q, "mail", `2`, time.Hour)
		enqueue(t, q, "build", `3`, 0)
		enqueue(t, q, "mail-slow", `4`, 0)
		claim(t, q, "mail-slow", queue.ClaimRequest{Visibility: time.Minute})
		infos, err := q.Queues(ctx, ns, "")
		want := []queue.QueueInfo{
			{Name: "build", Stats: queue.Stats{Visible: 1}},
			{Name: "mail", Stats: queue.Stats{Visible: 1, Delayed: 1}},
			{Name: "mail-slow", Stats: queue.Stats{InFlight: 1}},
		}
		if err != nil || fmt.Sprint(infos) != fmt.Sprint(want) {
			t.Fatalf("Queues = %+v, %v; want %+v", infos, err, want)
		}
		if infos, _ := q.Queues(ctx, ns, "mail"); len(infos) != 2 || infos[0].Name != "mail" {
			t.Fatalf("Queues with prefix mail = %+v", infos)
		}
		if infos, _ := q.Queues(ctx, "elsewhere", ""); len(infos) != 0 {
			t.Fatalf("another namespace lists %+v", infos)
		}
		if _, err := q.Purge(ctx, ns, "mail"); err != nil {
			t.Fatal(err)
		}
		if infos, _ := q.Queues(ctx, ns, "mail"); len(infos) != 1 || infos[0].Name != "mail-slow" {
			t.Fatalf("Queues after purging mail = %+v", infos)
		}
	})
}

// Consumers on two Queues claim concurrently; they ack the even messages
// and release the odd ones (their work fails): every even one is acked
// once, and every odd one ends a dead letter after exactly its 3 attempts.
func TestQueueDeadLettersUnderConcurrentClaims(t *testing.T) {
	b := redistest.Real(t)
	qs := []*queue.Queues{newQueues(t, b), newQueues(t, b)}
	ctx := context.Background()
	const messages, consumers, most = 60, 6, 3
	for i := range messages {
		if _, _, err := qs[i%2].Enqueue(ctx, ns, "flaky", queue.EnqueueRequest{Value: json.RawMessage(fmt.Sprint(i)), MaxAttempts: most}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	acked := map[string]int{}
	attempts := map[string]int{} // claims seen per odd message
	var wg sync.WaitGroup
	for c := range consumers {
		wg.Go(func() {
			q := qs[c%2]
			for {
				msgs, err := q.Claim(ctx, ns, "flaky", queue.ClaimRequest{Visibility: time.Minute, Max: 4})
				if err != nil {
					t.Error(err)
					return
				}
				if len(msgs) == 0 {
					return // nothing visible: every message is acked, dead or being released by another consumer
				}
				for _, m := range msgs {
					var n int
					if err := json.Unmarshal(m.Value, &n); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if n%2 == 0 {
						acked[string(m.Value)]++
					} else {
						attempts[string(m.Value)]++
					}
					mu.Unlock()
					if n%2 == 0 {
						err = q.Ack(ctx, ns, "flaky", m.ID, m.Receipt)
					} else {
						err = q.Release(ctx, ns, "flaky", m.ID, m.Receipt, 0)
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	// A consumer may stop while another still releases: drain what is left.
	for {
		msgs := claim(t, qs[0], "flaky", queue.ClaimRequest{Visibility: time.Minute, Max: 10})
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			attempts[string(m.Value)]++
			if err := qs[0].Release(ctx, ns, "flaky", m.ID, m.Receipt, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	for v, n := range acked {
		if n != 1 {
			t.Errorf("message %s acked %d times", v, n)
		}
	}
	dead, total, err := qs[1].Dead(ctx, ns, "flaky", "", queue.MaxDeadPage)
	if err != nil {
		t.Fatal(err)
	}
	if len(acked) != messages/2 || total != messages/2 || len(dead) != messages/2 {
		t.Fatalf("%d acked, %d dead (%d read); want %d of each", len(acked), total, len(dead), messages/2)
	}
	for _, m := range dead {
		var n int
		_ = json.Unmarshal(m.Value, &n)
		if n%2 != 1 || m.Attempts != most || attempts[string(m.Value)] != most {
			t.Errorf("dead letter %s: %d attempts recorded, %d claims seen; want an odd one, %d and %d", m.Value, m.Attempts, attempts[string(m.Value)], most, most)
		}
	}
	if s, _ := qs[0].Stats(ctx, ns, "flaky"); s != (queue.Stats{Dead: messages / 2}) {
		t.Fatalf("Stats = %+v", s)
	}
	if d := qs[0].Counters().Dead + qs[1].Counters().Dead; d != messages/2 {
		t.Fatalf("Counters count %d dead, want %d", d, messages/2)
	}
}

// A message past its TTL is deleted by the claim that finds it, whether it
// was never claimed or its claim lapsed; the claim takes the next one.
func TestQueueMessagesExpire(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		q := newQueues(t, b)
		ctx := context.Background()
		add := func(value string, ttl time.Duration) queue.Message {
			t.Helper()
			m, _, err := q.Enqueue(ctx, ns, "jobs", queue.EnqueueRequest{Value: json.RawMessage(value), TTL: ttl})
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		brief := add(`"brief"`, 500*time.Millisecond)
		if got := brief.ExpiresAt.Sub(brief.EnqueuedAt); got != 500*time.Millisecond {
			t.Fatalf("ExpiresAt - EnqueuedAt = %v, want the TTL", got)
		}
		claimed := add(`"claimed"`, 800*time.Millisecond)
		add(`"lasting"`, 0)
		got := claim(t, q, "jobs", queue.ClaimRequest{Visibility: 50 * time.Millisecond})
		if values(got) != `["brief"]` || !got[0].ExpiresAt.Equal(brief.ExpiresAt) {
			t.Fatalf("first claim = %+v", got)
		}
		got = claim(t, q, "jobs", queue.ClaimRequest{Visibility: 50 * time.Millisecond})
		if values(got) != `["claimed"]` || got[0].ID != claimed.ID {
			t.Fatalf("second claim = %+v", got)
		}
		time.Sleep(time.Second) // both backends run on real time: all but lasting expired
		got = claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute, Max: 10})
		if values(got) != `["lasting"]` || !got[0].ExpiresAt.IsZero() {
			t.Fatalf("claim after the TTLs = %+v, want lasting alone", got)
		}
		if s, _ := q.Stats(ctx, ns, "jobs"); s != (queue.Stats{InFlight: 1}) {
			t.Fatalf("Stats = %+v, want lasting in flight only", s)
		}
		if c := q.Counters(); c.Expired != 2 {
			t.Fatalf("Counters = %+v, want 2 expired", c)
		}
		n, err := b.Client.HLen(ctx, "ms:{test/queues/jobs}#queue-messages").Result()
		if err != nil || n != 2 {
			t.Fatalf("%d fields left in the queue's hash, %v; want lasting's v: and m:", n, err)
		}
		for _, bad := range []queue.EnqueueRequest{
			{Value: json.RawMessage(`1`), TTL: -time.Second},
			{Value: json.RawMessage(`1`), TTL: queue.MaxTTL + time.Second},
			{Value: json.RawMessage(`1`), Delay: time.Minute, TTL: time.Minute},
		} {
			if _, _, err := q.Enqueue(ctx, ns, "jobs", bad); !errors.Is(err, queue.ErrInvalidArgument) {
				t.Errorf("Enqueue %+v: %v, want ErrInvalidArgument", bad, err)
			}
		}
	})
}

// MaxLength refuses an enqueue while the queue holds that many messages,
// visible, delayed or claimed, and adds nothing; dead letters and acked
// messages make room; a replayed keyed enqueue is answered, full or not.
func TestQueueMaxLength(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		q := newQueues(t, b)
		ctx := context.Background()
		bounded := func(value string, opts ...func(*queue.EnqueueRequest)) error {
			req := queue.EnqueueRequest{Value: json.RawMessage(value), MaxLength: 3}
			for _, o := range opts {
				o(&req)
			}
			_, _, err := q.Enqueue(ctx, ns, "jobs", req)
			return err
		}
		keyed := func(r *queue.EnqueueRequest) { r.IdempotencyKey = "k1" }
		once := func(r *queue.EnqueueRequest) { r.MaxAttempts = 1 }
		for _, err := range []error{bounded(`1`, keyed, once), bounded(`2`, func(r *queue.EnqueueRequest) { r.Delay = time.Hour }), bounded(`3`)} {
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := bounded(`4`); !errors.Is(err, queue.ErrQueueFull) {
			t.Fatalf("fourth enqueue with max length 3: %v, want ErrQueueFull", err)
		}
		if err := bounded(`1`, keyed, once); err != nil {
			t.Fatalf("a keyed enqueue replayed on a full queue: %v", err)
		}
		// Claimed messages count: the claim takes 1 (in flight) and 3.
		got := claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute, Max: 2})
		if values(got) != "[1 3]" {
			t.Fatalf("claimed %s", values(got))
		}
		if err := bounded(`4`); !errors.Is(err, queue.ErrQueueFull) {
			t.Fatalf("with 2 in flight and 1 delayed: %v, want ErrQueueFull", err)
		}
		if err := q.Ack(ctx, ns, "jobs", got[1].ID, got[1].Receipt); err != nil {
			t.Fatal(err)
		}
		if err := bounded(`4`); err != nil {
			t.Fatalf("after an ack: %v", err)
		}
		if s, _ := q.Stats(ctx, ns, "jobs"); s != (queue.Stats{Visible: 1, Delayed: 1, InFlight: 1}) {
			t.Errorf("Stats = %+v", s)
		}
		if _, _, err := q.Enqueue(ctx, ns, "jobs", queue.EnqueueRequest{Value: json.RawMessage(`5`), MaxLength: -1}); !errors.Is(err, queue.ErrInvalidArgument) {
			t.Errorf("a negative max length: %v", err)
		}
	})
}
