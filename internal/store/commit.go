package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/rediserr"
)

// Defaults of the group committer.
const (
	DefaultCommitters     = 3
	DefaultMaxCommitBatch = 256
	// commitTimeout bounds one pipeline round trip; it is not tied to any
	// one request, whose cancellation must not fail its neighbours.
	commitTimeout = 5 * time.Second
	// maxEventValue is the largest value carried inside a put event;
	// watchers read larger ones with a GET.
	maxEventValue = 16 << 10
	// briefAbove is the largest text of several events that commitScript
	// publishes as is; a longer one goes out as a brief message (see
	// ParseMessage). 100 puts of small values make about 20 KB.
	briefAbove = 8 << 10
)

// writeOp is one write on its way through the group committer.
type writeOp struct {
	ns, key string
	req     PutRequest
	value   []byte // compacted
	ts, exp int64
	etag    string
	idem    string // idempotencyArg's, or ""

	run      *redis.Cmd // putScript's call, on the per-write path
	line     string     // the script's reply line for this write
	clocks   string     // the clocks field it wrote, when it left siblings
	blobs    []string   // the other siblings' envelopes, in the order of clocks
	replyErr error      // or the error of its call
	expired  bool       // the key had expired unannounced (parsePut)
	unread   bool       // the reply is left for submit to read
	res      PutResult
	err      error
	done     chan struct{}
}

// committer coalesces concurrent writes into Redis pipelines (group
// commit): a write waits only while the pipelines in flight finish, then
// goes out with every write that queued meanwhile. Each write is answered
// only after its own script ran in Redis and its event was published.
type committer struct {
	s    *Store
	ops  chan *writeOp // unbuffered: a handed-over write is always committed
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func newCommitter(s *Store) *committer {
	c := &committer{s: s, ops: make(chan *writeOp), stop: make(chan struct{})}
	for range s.cfg.Committers {
		c.wg.Add(1)
		go c.loop()
	}
	return c
}

func (c *committer) close() {
	c.once.Do(func() { close(c.stop) })
	c.wg.Wait()
}

// submit hands op to a committer and waits for its result. Once handed
// over, the write completes even if ctx is cancelled: it is atomic in Redis
// either way, and its neighbours in the pipeline must not fail with it.
func (c *committer) submit(ctx context.Context, op *writeOp) (PutResult, error) {
	op.done = make(chan struct{})
	select {
	case c.ops <- op:
	case <-ctx.Done():
		return PutResult{}, fmt.Errorf("store: put %q: %w", op.key, ctx.Err())
	case <-c.stop:
		return PutResult{}, ErrClosed
	}
	<-op.done
	if op.unread {
		// Read here rather than in the committer, which is off to the
		// next pipeline meanwhile.
		if op.res, op.err = c.s.parsePut(op); op.err == nil && !op.res.Replayed {
			c.s.count.wrote(op.res)
			c.s.count.published(op)
		}
	}
	return op.res, op.err
}

func (c *committer) loop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case op := <-c.ops:
			batch := []*writeOp{op}
		drain:
			for len(batch) < c.s.cfg.MaxCommitBatch {
				select {
				case op := <-c.ops:
					batch = append(batch, op)
				default:
					break drain
				}
			}
			c.commit(batch)
		}
	}
}

// commit applies a group of writes, publishes their events, and answers
// every write: in one commitScript call, or (per-write scripts) in one
// pipeline of putScript calls and then one publishScript call.
func (c *committer) commit(batch []*writeOp) {
	defer func() {
		for _, op := range batch {
			close(op.done)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	s := c.s
	s.count.commits.Add(1)
	if s.cfg.OnCommit != nil {
		s.cfg.OnCommit(len(batch))
	}
	if s.oneScript() {
		writes := make([]scriptWrite, len(batch))
		for i, op := range batch {
			writes[i].put = op
		}
		s.runCommit(ctx, writes)
		for _, op := range batch {
			op.unread = true // its writer reads the reply (submit)
		}
		return
	}

	pending := batch
	for attempt := 0; len(pending) > 0; attempt++ {
		pipe := s.rdb.Pipeline()
		writes := make([]indexWrite, len(pending))
		for i, op := range pending {
			writes[i] = indexWrite{ns: op.ns, key: op.key, exp: op.exp}
		}
		confirm := s.pipeIndexes(ctx, pipe, writes, true)
		for _, op := range pending {
			op.run = putScript.EvalSha(ctx, pipe, []string{keys.Redis(op.ns, op.key), keys.SubtreeIndex(op.ns, op.key)},
				op.key, op.req.Writer, op.req.Context.String(), envelopeTail(op), op.exp,
				op.ifMatchArg(), boolArg(op.req.IfNoneMatch), op.etag)
		}
		_, _ = pipe.Exec(ctx) // each command's own error is read below
		confirm()
		var retry []*writeOp
		for _, op := range pending {
			if rediserr.NoScript(op.run.Err()) && attempt == 0 {
				retry = append(retry, op)
			}
		}
		if len(retry) > 0 {
			// This Redis has not seen the script yet (or lost its script
			// cache): load it and run those writes again. The index updates
			// are idempotent.
			if err := putScript.Load(ctx, s.rdb).Err(); err != nil {
				for _, op := range retry {
					op.run.SetErr(err)
				}
				retry = nil
			}
		}
		pending = retry
	}

	var events []*Event
	var owners []*writeOp // owners[i] wrote events[i]; nil for expire events
	for _, op := range batch {
		op.setReply(op.run.Slice())
		op.res, op.err = s.parsePut(op)
		if op.err != nil || op.res.Replayed {
			continue
		}
		if op.expired {
			// The key had expired but was not swept yet: its expiry is
			// announced first, and the script's index update keeps the
			// sweeper from announcing it again.
			events = append(events, &Event{Type: EventExpire, Namespace: op.ns, Key: op.key, Timestamp: op.ts})
			owners = append(owners, nil)
		}
		ev := &Event{Type: EventPut, Namespace: op.ns, Key: op.key, Version: op.res.Version,
			Timestamp: op.ts, Writer: op.req.Writer}
		if len(op.value) <= maxEventValue {
			ev.Value = op.value
		}
		events = append(events, ev)
		owners = append(owners, op)
	}
	if len(events) == 0 {
		return
	}
	if err := s.publish(ctx, events...); err != nil {
		// The writes are in Redis but nobody heard of them: fail them, so
		// the writers retry (a retry supersedes their own write) rather
		// than trust caches elsewhere to notice.
		for _, op := range owners {
			if op != nil {
				op.err = err
			}
		}
		return
	}
	for i, op := range owners {
		if op != nil {
			op.res.EventID = events[i].ID
			s.count.wrote(op.res)
		}
	}
}

// setReply takes putScript's reply, {line} or {line, clocks, blob…} (see
// reply in writeLib), or the error of its call.
func (op *writeOp) setReply(reply []any, err error) {
	op.replyErr = err
	if err != nil {
		return
	}
	if len(reply) > 0 {
		op.line, _ = reply[0].(string)
	}
	if len(reply) > 1 {
		op.clocks = asString(reply[1])
	}
	for _, b := range reply[min(2, len(reply)):] {
		op.blobs = append(op.blobs, asString(b))
	}
}

// parsePut reads put's reply line and blobs for op (putScript's or
// commitScript's), and sets op.expired.
func (s *Store) parsePut(op *writeOp) (PutResult, error) {
	if op.replyErr != nil {
		return PutResult{}, s.wrap("put", op.key, op.replyErr)
	}
	line := op.line
	status, rest, _ := strings.Cut(line, " ")
	switch status {
	case "precondition_failed":
		return PutResult{}, fmt.Errorf("%w: %q changed or exists", ErrPreconditionFailed, op.key)
	case "replayed":
		return PutResult{Replayed: true}, nil // Put reads the entry
	case "idempotency_mismatch":
		return PutResult{}, fmt.Errorf("%w: idempotency key %q was used on %q for another request",
			ErrInvalidArgument, op.req.IdempotencyKey, op.key)
	}
	var f [5]string // version, siblings, superseded, expired, event; the etag is op.etag
	for i := range f {
		f[i], rest, _ = strings.Cut(rest, " ")
	}
	superseded, err1 := strconv.Atoi(f[2])
	eventID, err2 := strconv.ParseUint(f[4], 10, 64) // 0 until published, on the per-write path
	if status != "ok" || rest != "" || err1 != nil || err2 != nil {
		return PutResult{}, fmt.Errorf("store: put %q: unexpected script reply %q", op.key, line)
	}
	op.expired = f[3] == "1"
	version, err := clock.Parse(f[0])
	if err != nil {
		return PutResult{}, fmt.Errorf("store: put %q: %w", op.key, err)
	}
	sibs := make([]Envelope, 0, len(op.blobs)+1)
	clocks := op.clocks
	for _, b := range op.blobs {
		// The clocks field's entries ("id|writer|clock") name the other
		// siblings in the order of their envelopes.
		var entry string
		entry, clocks, _ = strings.Cut(clocks, ";")
		_, rest, _ := strings.Cut(entry, "|")
		_, clockText, _ := strings.Cut(rest, "|")
		e, err := decodeSibling(b, clockText)
		if err != nil {
			return PutResult{}, fmt.Errorf("store: put %q: corrupt sibling: %w", op.key, err)
		}
		sibs = append(sibs, e)
	}
	written := Envelope{Value: op.value, Version: version, Timestamp: op.ts, Writer: op.req.Writer}
	sibs = append(sibs, written)
	entry, err := s.entry(op.ns, op.key, op.etag, op.exp, sibs, "")
	if err != nil {
		return PutResult{}, err
	}
	return PutResult{Entry: entry, Superseded: superseded, Conflicted: len(sibs) > 1, Written: written,
		EventID: eventID}, nil
}

// put writes one validated, compact value (see checkPut) through the
// group committer; idem is idempotencyArg's, or "".
func (s *Store) put(ctx context.Context, ns, key string, req PutRequest, ts, exp int64, idem string) (PutResult, error) {
	op := &writeOp{ns: ns, key: key, req: req, value: req.Value, ts: ts, exp: exp, etag: newETag(), idem: idem}
	res, err := s.commit.submit(ctx, op)
	if op.refusedAbsent() {
		s.unraise(ctx, []keyRef{{ns, key}})
	}
	return res, err
}

// refusedAbsent reports whether the write's condition failed on a key that
// does not exist: the listing entries raised for it may stand over nothing.
func (op *writeOp) refusedAbsent() bool {
	return op.line == "precondition_failed " // no current etag
}

// idempotencyArg is what the write scripts get for req's IdempotencyKey
// (see put in writeLib): the key and a digest of everything the request
// asks, so that the same key on another request is told apart. "" when
// req has none. ttl is the resolved TTL: the expiry itself moves with the
// clock between a request and its retry.
func idempotencyArg(req PutRequest, ttl time.Duration) string {
	if req.IdempotencyKey == "" {
		return ""
	}
	parts := []string{req.Writer, req.Context.String(), strconv.FormatInt(int64(ttl), 10),
		req.IfMatch, boolArg(req.IfNoneMatch), string(req.Value)}
	if req.IdempotencySubject != "" {
		parts = []string{req.Writer, "subject", req.IdempotencySubject}
	}
	h := sha256.New()
	for _, part := range parts {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return req.IdempotencyKey + " " + hex.EncodeToString(h.Sum(nil)[:12])
}

// ifMatchArg is the If-Match argument of op's script: its If-Match, and
// after a newline its idempotency argument when it has one.
func (op *writeOp) ifMatchArg() string {
	if op.idem == "" {
		return op.req.IfMatch
	}
	return op.req.IfMatch + "\n" + op.idem
}

// envelopeTail is the stored envelope after its version, which the script
// prepends: `,"timestamp":…,"writer":"…","value":…}`.
func envelopeTail(op *writeOp) []byte {
	tail := make([]byte, 0, len(op.value)+len(op.req.Writer)+48)
	tail = append(tail, `,"timestamp":`...)
	tail = strconv.AppendInt(tail, op.ts, 10)
	tail = append(tail, `,"writer":"`...)
	tail = append(tail, op.req.Writer...) // a valid id needs no JSON escaping
	tail = append(tail, `","value":`...)
	tail = append(tail, op.value...)
	return append(tail, '}')
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return ""
}
