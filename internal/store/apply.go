package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/rediserr"
)

// commitStride is how many ARGV commitScript takes per write.
const commitStride = 9

// scriptWrite is one write of a commitScript call: a put or a delete.
type scriptWrite struct {
	put *writeOp
	del *deleteOp
}

// deleteOp is one delete on its way through commitScript (or deleteScript,
// in a batch on Cluster).
type deleteOp struct {
	ns, key, ifMatch string
	idem             string // deleteIdempotencyArg's, or ""
	ts               int64  // the event's timestamp

	run     *redis.Cmd // deleteScript's call, on the per-write path
	n       int64      // del's reply: 1 deleted (3: and its subtree left empty, on Cluster), 0 absent, -1 If-Match failed, 2 replayed (4: found absent before), -2 idempotency mismatch
	eventID uint64     // of the delete event, when commitScript published it
	err     error      // reaching Redis
}

// newDeleteOp prepares a delete of key under req, its event at ts.
func newDeleteOp(ns, key string, req DeleteRequest, ts int64) deleteOp {
	return deleteOp{ns: ns, key: key, ifMatch: req.IfMatch, idem: deleteIdempotencyArg(req), ts: ts}
}

// ifMatchArg is the ifm argument of del: its If-Match, and after a newline
// its idempotency argument when it has one.
func (d *deleteOp) ifMatchArg() string {
	if d.idem == "" {
		return d.ifMatch
	}
	return d.ifMatch + "\n" + d.idem
}

// deleteIdempotencyArg is what del gets for req's IdempotencyKey: the key
// and a digest of the request's condition (the key deleted is the one
// that remembers it). "" when req has none.
func deleteIdempotencyArg(req DeleteRequest) string {
	if req.IdempotencyKey == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(req.IfMatch))
	return req.IdempotencyKey + " " + hex.EncodeToString(sum[:12])
}

// oneScript reports whether writes go through commitScript, which applies a
// whole group of writes and publishes their events in one call. On Cluster
// (or with Config.PerKeyScripts) every write runs putScript or deleteScript
// alone, in its own hash slot, and publishScript follows.
func (s *Store) oneScript() bool { return !s.cfg.PerKeyScripts }

// pipeCommit queues one commitScript call for writes.
//
// The command is built here rather than by go-redis's EvalSha so that the
// values the writes of a batch repeat (namespace, writer, subtree index,
// expiry) are boxed into an interface once rather than once per write
// (see reuse): boxing was a third of a batch's allocations.
func (s *Store) pipeCommit(ctx context.Context, pipe redis.Pipeliner, writes []scriptWrite) *redis.Cmd {
	n := len(writes)
	cmd := make([]any, 0, 3+3+2*n+4+commitStride*n)
	cmd = append(cmd, "evalsha", commitScript.Hash(), 3+2*n, eventSeqKey, eventLogKey, expiryKey)
	args := make([]any, 0, 4+commitStride*n)
	args = append(args, ChangeChannel, s.cfg.EventLogLen, maxEventValue, briefAbove)
	var lastNS, lastTree, lastIndex string
	var nsBox, writerBox, indexBox, expBox, tsBox any
	index := func(ns, key string) any {
		if tree := keys.Subtree(key); ns != lastNS || tree != lastTree || lastIndex == "" {
			lastNS, lastTree, lastIndex = ns, tree, keys.SubtreeIndex(ns, key)
		}
		return reuse(&indexBox, lastIndex)
	}
	for _, w := range writes {
		if op := w.put; op != nil {
			cmd = append(cmd, keys.Redis(op.ns, op.key), index(op.ns, op.key))
			cond := op.ifMatchArg()
			if op.req.IfNoneMatch {
				cond = "!" + cond
			}
			args = append(args, "put", op.key, reuse(&writerBox, op.req.Writer), op.req.Context.String(),
				envelopeTail(op), reuse(&expBox, op.exp), cond, op.etag, reuse(&nsBox, op.ns))
			continue
		}
		d := w.del
		cmd = append(cmd, keys.Redis(d.ns, d.key), index(d.ns, d.key))
		args = append(args, "delete", d.key, "", "", reuse(&tsBox, d.ts), "", d.ifMatchArg(), "", reuse(&nsBox, d.ns))
	}
	return pipe.Do(ctx, append(cmd, args...)...)
}

// reuse returns v in an interface: the one in *last when that holds the
// same value, else a new one, kept in *last for the next call.
func reuse[T comparable](last *any, v T) any {
	if l, ok := (*last).(T); ok && l == v {
		return *last
	}
	*last = v
	return *last
}

// readCommit hands each write its part of a commitScript reply (or the
// call's error), and counts the delete events the call published.
func (s *Store) readCommit(cmd *redis.Cmd, writes []scriptWrite) {
	text, err := cmd.Text()
	var events uint64
	for _, w := range writes {
		var line string
		if err == nil {
			line, text, _ = strings.Cut(text, "\n")
		}
		if op := w.put; op != nil {
			op.line, op.replyErr = line, err // parsePut reads it, and counts its events
			if err != nil {
				continue
			}
			// "ok version siblings …": the clocks field and the other
			// siblings' envelopes follow.
			status, rest, _ := strings.Cut(line, " ")
			_, rest, _ = strings.Cut(rest, " ")
			sibs, _, _ := strings.Cut(rest, " ")
			if n, _ := strconv.Atoi(sibs); status == "ok" && n > 1 {
				op.clocks, text, _ = strings.Cut(text, "\n")
				op.blobs = make([]string, n-1)
				for i := range op.blobs {
					op.blobs[i], text, _ = strings.Cut(text, "\n")
				}
			}
			continue
		}
		d := w.del
		if err != nil {
			d.err = err
			continue
		}
		f := strings.Fields(line)
		var err1, err2 error
		if len(f) == 3 && f[0] == "del" {
			d.n, err1 = strconv.ParseInt(f[1], 10, 64)
			d.eventID, err2 = strconv.ParseUint(f[2], 10, 64)
		}
		if len(f) != 3 || f[0] != "del" || err1 != nil || err2 != nil {
			d.err = fmt.Errorf("store: delete %q: unexpected script reply %q", d.key, line)
			continue
		}
		if d.n == 1 {
			events++
		}
	}
	s.count.events.Add(events)
}

// result reads a delete's outcome as an error: nil when it deleted, or
// when it had been applied before (replayed); ErrNotFound when it found no
// key, now or (replayed) when it was first sent.
func (d *deleteOp) result(s *Store) error {
	if d.run != nil {
		d.n, d.err = d.run.Int64()
	}
	switch {
	case d.err != nil:
		return s.wrap("delete", d.key, d.err)
	case d.n == 0:
		return fmt.Errorf("%w: %q", ErrNotFound, d.key)
	case d.n == 4:
		s.count.replayedDeletes.Add(1)
		return fmt.Errorf("%w: %q did not exist when this delete was first sent", ErrNotFound, d.key)
	case d.n == -1:
		return fmt.Errorf("%w: %q changed", ErrPreconditionFailed, d.key)
	case d.n == -2:
		return fmt.Errorf("%w: idempotency key %q was used on %q for another request",
			ErrInvalidArgument, strings.Fields(d.idem)[0], d.key)
	case d.n == 2:
		s.count.replayedDeletes.Add(1)
	}
	return nil
}

// replayed reports whether the delete had been applied before under its
// idempotency key, and was not applied again.
func (d *deleteOp) replayed() bool { return d.n == 2 || d.n == 4 }

// emptied reports whether the delete left its subtree index empty, on the
// per-write path, where no script may take the subtree out of the listing
// indexes above it (markEmptied).
func (d *deleteOp) emptied() bool { return d.n == 3 }

// runCommit runs writes in one commitScript call, after the namespace-wide
// index updates of its puts, in one round trip; a Redis that lost its
// script cache gets the script loaded and the call once more (nothing of a
// refused call ran).
func (s *Store) runCommit(ctx context.Context, writes []scriptWrite) {
	idx := make([]indexWrite, 0, len(writes))
	for _, w := range writes {
		if op := w.put; op != nil {
			idx = append(idx, indexWrite{ns: op.ns, key: op.key, exp: op.exp})
		}
	}
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		confirm := s.pipeIndexes(ctx, pipe, idx, false)
		cmd := s.pipeCommit(ctx, pipe, writes)
		_, _ = pipe.Exec(ctx) // the call's own error is read below
		confirm()
		if rediserr.NoScript(cmd.Err()) && attempt == 0 {
			if err := commitScript.Load(ctx, s.rdb).Err(); err == nil {
				continue
			}
		}
		s.readCommit(cmd, writes)
		return
	}
}

// deleteOne deletes through commitScript: one round trip, event included.
func (s *Store) deleteOne(ctx context.Context, ns, key string, req DeleteRequest) (DeleteResult, error) {
	d := newDeleteOp(ns, key, req, s.cfg.Now().UnixMilli())
	s.runCommit(ctx, []scriptWrite{{del: &d}})
	err := d.result(s)
	return DeleteResult{Replayed: d.replayed()}, err
}
