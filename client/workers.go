package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// DefaultHeartbeatInterval is the period of StartHeartbeat when it is given
// none: the design document's heartbeatInterval, well inside the server's
// default heartbeat TTL of 30 s.
const DefaultHeartbeatInterval = 5 * time.Second

// Worker is an active worker: one whose heartbeat has not expired.
type Worker struct {
	ID string
	// Status and Capacity are the worker's status and capacity values as
	// JSON; nil when it has written none.
	Status, Capacity json.RawMessage
	// LastHeartbeat is when it last beat; ExpiresAt is when it stops
	// counting as active unless it beats again.
	LastHeartbeat, ExpiresAt time.Time
}

// UnmarshalJSON reads the server's worker (times in Unix ms).
func (w *Worker) UnmarshalJSON(b []byte) error {
	var v struct {
		ID            string          `json:"id"`
		Status        json.RawMessage `json:"status"`
		Capacity      json.RawMessage `json:"capacity"`
		LastHeartbeat int64           `json:"last_heartbeat"`
		ExpiresAt     int64           `json:"expires_at"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*w = Worker{ID: v.ID, Status: v.Status, Capacity: v.Capacity,
		LastHeartbeat: fromMillis(v.LastHeartbeat), ExpiresAt: fromMillis(v.ExpiresAt)}
	return nil
}

// HeartbeatOption configures Heartbeat and StartHeartbeat.
type HeartbeatOption func(*heartbeatOptions)

type heartbeatOptions struct {
	ttl     time.Duration
	onError func(error)
}

// HeartbeatTTL sets how long one beat keeps the worker active, rounded up
// to whole seconds. Defaults to the server's heartbeat TTL (30 s).
func HeartbeatTTL(d time.Duration) HeartbeatOption {
	return func(o *heartbeatOptions) { o.ttl = d }
}

// OnHeartbeatError makes StartHeartbeat call fn with the error of every
// failed beat (it tries again on the next tick either way). fn runs on the
// heartbeat goroutine: it must not block. Heartbeat ignores it.
func OnHeartbeatError(fn func(error)) HeartbeatOption {
	return func(o *heartbeatOptions) { o.onError = fn }
}

// Heartbeat marks the client's worker (WithWorkerID) active and returns when
// that ends unless it beats again. It fails without a worker id.
func (c *Client) Heartbeat(ctx context.Context, opts ...HeartbeatOption) (time.Time, error) {
	if c.workerID == "" {
		return time.Time{}, ErrNoWorkerID
	}
	if err := checkName("worker id", c.workerID); err != nil {
		return time.Time{}, err
	}
	var o heartbeatOptions
	for _, opt := range opts {
		opt(&o)
	}
	var body any
	if o.ttl > 0 {
		body = struct {
			TTL int64 `json:"ttl"`
		}{seconds(o.ttl)}
	} else if o.ttl < 0 {
		return time.Time{}, fmt.Errorf("memsync: negative heartbeat ttl %v: %w", o.ttl, ErrInvalid)
	}
	var out struct {
		Worker    string `json:"worker"`
		ExpiresAt int64  `json:"expires_at"`
	}
	path := pathOf("v1/workers", c.workerID, "heartbeat")
	if err := c.do(ctx, request{method: http.MethodPut, path: path, body: body}, &out); err != nil {
		return time.Time{}, err
	}
	return fromMillis(out.ExpiresAt), nil
}

// StartHeartbeat keeps the client's worker active: it beats once before it
// returns, then every interval (DefaultHeartbeatInterval when interval ≤ 0)
// until ctx is done or stop is called. A failed beat (each is bounded by
// interval) is reported to OnHeartbeatError, if given, and tried again on
// the next tick. stop ends the loop and returns once it has ended; it may be
// called more than once. Without a worker id every beat fails.
func (c *Client) StartHeartbeat(ctx context.Context, interval time.Duration, opts ...HeartbeatOption) (stop func()) {
	if interval <= 0 {
		interval = DefaultHeartbeatInterval
	}
	var o heartbeatOptions
	for _, opt := range opts {
		opt(&o)
	}
	beat := func(ctx context.Context) {
		bctx, cancel := context.WithTimeout(ctx, interval)
		defer cancel()
		if _, err := c.Heartbeat(bctx, opts...); err != nil && ctx.Err() == nil && o.onError != nil {
			o.onError(err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	beat(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				beat(ctx)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(cancel)
		<-done
	}
}

// ActiveWorkers lists the workers whose heartbeat lives, with their status
// and capacity, sorted by id.
func (c *Client) ActiveWorkers(ctx context.Context) ([]Worker, error) {
	var out struct {
		Workers []Worker `json:"workers"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/workers"}, &out); err != nil {
		return nil, err
	}
	return out.Workers, nil
}

// SyncWorkerStatus writes the status of worker workerID
// (workers/{id}/status, last write wins).
func (c *Client) SyncWorkerStatus(ctx context.Context, workerID string, status any, opts ...PutOption) (*Entry, error) {
	if err := checkName("worker id", workerID); err != nil {
		return nil, err
	}
	return c.putEntry(ctx, pathOf("v1/workers", workerID, "status"), status, opts)
}

// WorkerStatus reads the status of worker workerID. It returns ErrNotFound
// when there is none.
func (c *Client) WorkerStatus(ctx context.Context, workerID string, opts ...GetOption) (*Entry, error) {
	if err := checkName("worker id", workerID); err != nil {
		return nil, err
	}
	return c.getEntry(ctx, pathOf("v1/workers", workerID, "status"), opts)
}

// SyncWorkerCapacity writes the capacity of worker workerID
// (workers/{id}/capacity, last write wins).
func (c *Client) SyncWorkerCapacity(ctx context.Context, workerID string, capacity any, opts ...PutOption) (*Entry, error) {
	if err := checkName("worker id", workerID); err != nil {
		return nil, err
	}
	return c.putEntry(ctx, pathOf("v1/workers", workerID, "capacity"), capacity, opts)
}

// WorkerCapacity reads the capacity of worker workerID. It returns
// ErrNotFound when there is none.
func (c *Client) WorkerCapacity(ctx context.Context, workerID string, opts ...GetOption) (*Entry, error) {
	if err := checkName("worker id", workerID); err != nil {
		return nil, err
	}
	return c.getEntry(ctx, pathOf("v1/workers", workerID, "capacity"), opts)
}
