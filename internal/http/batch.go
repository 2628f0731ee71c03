package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/store"
)

// Queue holds the writes of PUT ?async=true until they are flushed to
// Redis (package async).
type Queue interface {
	// Enqueue accepts a write; it returns store.ErrInvalidKey or
	// store.ErrInvalidArgument for a write that could never be applied,
	// and an error wrapping store.ErrUnavailable when the queue is full or
	// closed.
	Enqueue(op store.BatchOp) error
	// Flush writes everything accepted before the call and returns how
	// many writes it wrote.
	Flush(ctx context.Context) (int, error)
	// Queued reports whether a write of the key waits in the queue.
	Queued(ns, key string) bool
	// Pending counts the writes waiting.
	Pending() int
}

// queuedStore makes the writes waiting in a Queue visible to this
// instance: an operation on a key with a queued write flushes the queue
// first, so that a read sees the write (read your own async writes) and a
// later synchronous write lands after it rather than under it. Listing
// flushes whenever anything waits, since a queued write may create a key.
type queuedStore struct {
	Store
	q Queue
}

// withQueue wraps st so that it sees q's writes; q nil leaves st as it is.
func withQueue(st Store, q Queue) Store {
	if q == nil {
		return st
	}
	return queuedStore{Store: st, q: q}
}

func (s queuedStore) settle(ctx context.Context, ns string, ks ...string) error {
	for _, k := range ks {
		if s.q.Queued(ns, k) {
			_, err := s.q.Flush(ctx)
			return err
		}
	}
	return nil
}

func (s queuedStore) Get(ctx context.Context, ns, key string, opt store.GetOptions) (store.Entry, error) {
	if err := s.settle(ctx, ns, key); err != nil {
		return store.Entry{}, err
	}
	return s.Store.Get(ctx, ns, key, opt)
}

func (s queuedStore) GetMany(ctx context.Context, ns string, ks []string, opt store.GetOptions) ([]store.Entry, error) {
	if err := s.settle(ctx, ns, ks...); err != nil {
		return nil, err
	}
	return s.Store.GetMany(ctx, ns, ks, opt)
}

func (s queuedStore) List(ctx context.Context, ns, prefix, cursor string, limit int) ([]string, string, error) {
	if s.q.Pending() > 0 {
		if _, err := s.q.Flush(ctx); err != nil {
			return nil, "", err
		}
	}
	return s.Store.List(ctx, ns, prefix, cursor, limit)
}

// DeletePrefix flushes whenever anything waits, as List does: a queued
// write under the prefix would otherwise land after the delete.
func (s queuedStore) DeletePrefix(ctx context.Context, ns, prefix string) (int, error) {
	if s.q.Pending() > 0 {
		if _, err := s.q.Flush(ctx); err != nil {
			return 0, err
		}
	}
	return s.Store.DeletePrefix(ctx, ns, prefix)
}

func (s queuedStore) Put(ctx context.Context, ns, key string, req store.PutRequest) (store.PutResult, error) {
	if err := s.settle(ctx, ns, key); err != nil {
		return store.PutResult{}, err
	}
	return s.Store.Put(ctx, ns, key, req)
}

func (s queuedStore) Delete(ctx context.Context, ns, key string, req store.DeleteRequest) (store.DeleteResult, error) {
	if err := s.settle(ctx, ns, key); err != nil {
		return store.DeleteResult{}, err
	}
	return s.Store.Delete(ctx, ns, key, req)
}

func (s queuedStore) Batch(ctx context.Context, ops []store.BatchOp, atomic bool) ([]store.BatchResult, error) {
	for _, op := range ops {
		if s.q.Queued(op.Namespace, op.Key) {
			if _, err := s.q.Flush(ctx); err != nil {
				return nil, err
			}
			break
		}
	}
	return s.Store.Batch(ctx, ops, atomic)
}

// queuedResponse answers a write accepted by the queue (202).
type queuedResponse struct {
	Queued    bool   `json:"queued"`
	Key       string `json:"key"`
	Namespace string `json:"namespace"`
	// Pending counts the writes waiting on this instance, this one included.
	Pending int `json:"pending"`
}

// enqueuePut answers PUT ?async=true: the write is validated and queued,
// and 202 says it will be flushed (CONTRACT §7). Without a queue the write
// is applied at once, which keeps the promise too.
func enqueuePut(w http.ResponseWriter, r *http.Request, log *slog.Logger, q Queue, st Store, ns, key string, put store.PutRequest) {
	if put.IfMatch != "" || put.IfNoneMatch {
		writeError(w, r, log, fmt.Errorf("%w: If-Match and If-None-Match cannot be combined with async=true: a queued write's precondition would be checked only after the answer", errInvalidArgument))
		return
	}
	pending := 0
	if q == nil {
		if _, err := st.Put(r.Context(), ns, key, put); err != nil {
			writeError(w, r, log, err)
			return
		}
	} else {
		if err := q.Enqueue(store.BatchOp{Kind: store.OpPut, Namespace: ns, Key: key, PutRequest: put}); err != nil {
			writeError(w, r, log, err)
			return
		}
		pending = q.Pending()
	}
	writeJSON(w, http.StatusAccepted, queuedResponse{Queued: true, Key: key, Namespace: ns, Pending: pending})
}

// handleSync is POST /v1/sync, the seed's forceSync(): every write queued
// before the request is in Redis when it answers 200.
func handleSync(log *slog.Logger, q Queue) http.HandlerFunc {
	type response struct {
		Flushed int `json:"flushed"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		n := 0
		if q != nil {
			var err error
			if n, err = q.Flush(r.Context()); err != nil {
				writeError(w, r, log, err)
				return
			}
		}
		writeJSON(w, http.StatusOK, response{Flushed: n})
	}
}

// batchProblem is the answer to an atomic batch that applied nothing: the
// problem of the op that stopped it, and its index.
type batchProblem struct {
	problem
	Op int `json:"op"`
}

// handleBatch is POST /v1/batch: up to store.MaxBatchOps gets, puts and
// deletes in one Redis round trip, each validated like its single-request
// counterpart. ?ns= and X-Worker-Id apply to every op.
//
// Not atomic: 200 with one result per op, in order, each with the status
// its single request would have had and its entry or problem; a bad op
// fails alone. Atomic: all or nothing; 200 as above when everything
// applied, else one problem with the index of the op that stopped the
// batch: 400 for an invalid op, 412 precondition_failed for an if_match
// that did not hold.
func handleBatch(log *slog.Logger, cfg Config, st Store) http.HandlerFunc {
	type result = batchResult
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := namespace(r, cfg)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writer, err := workerHeader(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		// A batch's Idempotency-Key names each of its puts and deletes:
		// <key>.<index>.
		idem := r.Header.Get("Idempotency-Key")
		if idem != "" && (!clock.ValidID(idem) || len(idem) > maxBatchIdempotencyKey) {
			writeError(w, r, log, fmt.Errorf("%w: a batch's Idempotency-Key must be 1-%d characters of [A-Za-z0-9._:@-]", errInvalidArgument, maxBatchIdempotencyKey))
			return
		}
		var req batchRequest
		if err := decodeBatch(r, cfg.MaxDepth, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		if idem != "" && req.Atomic && !slices.ContainsFunc(req.Ops, func(o batchOpBody) bool { return o.Op == string(store.OpPut) || o.Op == string(store.OpDelete) }) {
			writeError(w, r, log, fmt.Errorf("%w: an atomic batch's Idempotency-Key is remembered by the keys its puts write and its deletes delete, and this batch has neither", errInvalidArgument))
			return
		}
		switch {
		case req.Ops == nil:
			writeError(w, r, log, fmt.Errorf("%w: the body needs \"ops\", a list of operations", errInvalidArgument))
			return
		case len(req.Ops) > store.MaxBatchOps:
			writeError(w, r, log, fmt.Errorf("%w: a batch holds at most %d operations, not %d", errInvalidArgument, store.MaxBatchOps, len(req.Ops)))
			return
		}

		// Validate at the edge; the ops that pass go to the store, the
		// others keep their error in place.
		results := make([]result, len(req.Ops))
		ops := make([]store.BatchOp, 0, len(req.Ops))
		at := make([]int, 0, len(req.Ops)) // at[j]: the request index of ops[j]
		// A token that may not make one of the writes gets none of them.
		for i, o := range req.Ops {
			if o.Op == string(store.OpPut) || o.Op == string(store.OpDelete) {
				if err := authorizeWrite(r, o.Key); err != nil {
					writeError(w, r, log, fmt.Errorf("op %d: %w", i, err))
					return
				}
			}
		}
		for i, o := range req.Ops {
			bop, err := batchOp(ns, writer, o.Op, o.Key, o.Value, o.Context, o.TTL, o.IfMatch)
			if err != nil {
				if req.Atomic {
					writeBatchProblem(w, r, log, &store.BatchError{Index: i, Err: err})
					return
				}
				results[i] = result{Status: problemOf(err).Status, Error: ptr(problemOf(err))}
				continue
			}
			if idem != "" && (bop.Kind == store.OpPut || bop.Kind == store.OpDelete) {
				bop.IdempotencyKey = idem + "." + strconv.Itoa(i)
			}
			ops = append(ops, bop)
			at = append(at, i)
		}
		if len(ops) > 0 {
			res, err := st.Batch(r.Context(), ops, req.Atomic)
			if err != nil {
				var be *store.BatchError
				if errors.As(err, &be) && be.Index < len(at) {
					be.Index = at[be.Index]
					writeBatchProblem(w, r, log, be)
					return
				}
				writeError(w, r, log, err)
				return
			}
			for j, rr := range res {
				i := at[j]
				switch {
				case rr.Err != nil:
					p := problemOf(rr.Err)
					if p.Status == http.StatusInternalServerError {
						log.Error("internal error", "method", r.Method, "path", r.URL.Path, "op", i, "err", rr.Err)
					}
					results[i] = result{Status: p.Status, Error: &p, Replayed: rr.Replayed}
				case ops[j].Kind == store.OpDelete:
					results[i] = result{Status: http.StatusNoContent, Replayed: rr.Replayed}
				default:
					e := newEntryResponse(rr.Entry, false)
					results[i] = result{Status: http.StatusOK, Entry: &e, Replayed: rr.Replayed}
				}
			}
		}
		writeBatchResults(w, results)
	}
}

// batchResult is the answer to one op of a batch.
type batchResult struct {
	Status int            `json:"status"`
	Entry  *entryResponse `json:"entry,omitempty"`
	Error  *problem       `json:"error,omitempty"`
	// Replayed: a put or delete applied by an earlier request under the
	// batch's Idempotency-Key, not applied again; in an atomic batch, every
	// put and delete of a batch applied before.
	Replayed bool `json:"replayed,omitempty"`
}

// maxBatchIdempotencyKey leaves room, in an idempotency key's 128
// characters, for the ".<index>" that names each put of a batch.
const maxBatchIdempotencyKey = 123

// writeBatchResults answers a batch with {"results": […]}, as writeJSON
// would, byte for byte, but with the entries appended by hand: through
// encoding/json a Marshaler's output is validated and compacted once more,
// which cost as much as the rest of a batch of puts.
func writeBatchResults(w http.ResponseWriter, results []batchResult) {
	b := make([]byte, 0, 64+256*len(results))
	b = append(b, `{"results":[`...)
	for i, r := range results {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"status":`...)
		b = strconv.AppendInt(b, int64(r.Status), 10)
		if r.Entry != nil {
			b = append(b, `,"entry":`...)
			b = r.Entry.appendJSON(b)
		}
		if r.Error != nil {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(r.Error); err != nil {
				writeJSON(w, http.StatusOK, struct {
					Results []batchResult `json:"results"`
				}{results}) // cannot happen: problems are plain data
				return
			}
			b = append(b, `,"error":`...)
			b = append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
		if r.Replayed {
			b = append(b, `,"replayed":true`...)
		}
		b = append(b, '}')
	}
	b = append(b, "]}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// batchOp validates one op of a batch as its single request would be.
func batchOp(ns, writer, kind, key string, value json.RawMessage, ctxClock *clock.Vector, ttl *int64, ifMatch string) (store.BatchOp, error) {
	op := store.BatchOp{Kind: store.OpKind(kind), Namespace: ns, Key: key}
	switch op.Kind {
	case store.OpPut, store.OpGet, store.OpDelete:
	default:
		return op, fmt.Errorf("%w: op must be \"put\", \"get\" or \"delete\", not %q", errInvalidArgument, kind)
	}
	if err := keys.Validate(key); err != nil {
		return op, err
	}
	var err error
	if op.IfMatch, err = parseBatchIfMatch(ifMatch); err != nil {
		return op, err
	}
	if op.Kind != store.OpPut {
		if value != nil || ctxClock != nil || ttl != nil {
			return op, fmt.Errorf("%w: value, context and ttl belong to a put, not a %s", errInvalidArgument, kind)
		}
		return op, nil
	}
	if value == nil {
		return op, fmt.Errorf("%w: a put needs a \"value\" (null is a value)", errInvalidArgument)
	}
	if check := checkForKey(key); check != nil {
		if err := check(value); err != nil {
			return op, err
		}
	}
	op.Value, op.ValueValid, op.Writer = value, true, writer // decodeBatch validated the body
	if ctxClock != nil {
		op.Context = *ctxClock
	}
	if ttl != nil {
		if *ttl < 0 || *ttl > maxTTLSeconds {
			return op, fmt.Errorf("%w: ttl must be a whole number of seconds >= 0", errInvalidArgument)
		}
		d := time.Duration(*ttl) * time.Second
		op.TTL = &d
	}
	return op, nil
}

// parseBatchIfMatch reads an op's if_match: the etag as an entry gives it
// (quoted, as in the If-Match header) or bare, or "*" for any existing
// state.
func parseBatchIfMatch(v string) (string, error) {
	if v == "" || strings.HasPrefix(v, `"`) || strings.HasPrefix(v, "W/") || v == "*" {
		return parseIfMatch(v)
	}
	if strings.ContainsAny(v, "\", \t") {
		return "", fmt.Errorf("%w: if_match must be one entity tag, as an entry's etag gives it", errInvalidArgument)
	}
	return v, nil
}

// writeBatchProblem reports an atomic batch that applied nothing.
func writeBatchProblem(w http.ResponseWriter, r *http.Request, log *slog.Logger, be *store.BatchError) {
	p := problemOf(be)
	if p.Status == http.StatusInternalServerError {
		writeError(w, r, log, be)
		return
	}
	p.Detail = fmt.Sprintf("atomic batch applied nothing: op %d: %s", be.Index, problemOf(be.Err).Detail)
	encode(w, p.Status, "application/problem+json", batchProblem{problem: p, Op: be.Index})
}

func ptr[T any](v T) *T { return &v }
