package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// QueueMessage is a message of a work queue. A claimed one (Claim) carries
// the Receipt that Ack, Release and Extend send.
type QueueMessage struct {
	// ID is 16 digits; ids increase in the order messages were added.
	ID string
	// Value is the message's value as JSON (nil for one just enqueued).
	Value json.RawMessage
	// Attempts counts the claims of the message, this one included.
	Attempts   int
	EnqueuedAt time.Time
	// VisibleAt is when the message is visible to claims again, by the
	// server's clock: the end of the claim's visibility timeout.
	VisibleAt time.Time
	// Receipt proves the claim; empty for a message just enqueued.
	Receipt string

	c     *Client
	queue string
}

// messageJSON is a message on the wire (times in Unix ms).
type messageJSON struct {
	ID         string          `json:"id"`
	Value      json.RawMessage `json:"value"`
	Attempts   int             `json:"attempts"`
	EnqueuedAt int64           `json:"enqueued_at"`
	VisibleAt  int64           `json:"visible_at"`
	Receipt    string          `json:"receipt"`
}

func (c *Client) newMessage(queue string, m messageJSON) *QueueMessage {
	return &QueueMessage{ID: m.ID, Value: m.Value, Attempts: m.Attempts, EnqueuedAt: fromMillis(m.EnqueuedAt),
		VisibleAt: fromMillis(m.VisibleAt), Receipt: m.Receipt, c: c, queue: queue}
}

// Decode unmarshals the message's value into v.
func (m *QueueMessage) Decode(v any) error {
	if m.Value == nil {
		return fmt.Errorf("memsync: message %s of queue %q carries no value", m.ID, m.queue)
	}
	return json.Unmarshal(m.Value, v)
}

// Enqueue adds value (encoded with encoding/json) to queue (one segment:
// "jobs"), visible to claims after delay (0: at once). A message sent
// twice, after a lost answer, is delivered twice: the queue delivers at
// least once, so its consumers must be safe to run twice anyway.
func (c *Client) Enqueue(ctx context.Context, queue string, value any, delay time.Duration) (*QueueMessage, error) {
	if err := checkName("queue name", queue); err != nil {
		return nil, err
	}
	if delay < 0 {
		return nil, fmt.Errorf("memsync: negative delay %v: %w", delay, ErrInvalid)
	}
	raw, err := json.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("memsync: enqueue to %q: %w", queue, err)
	}
	body := struct {
		Value   json.RawMessage `json:"value"`
		DelayMs int64           `json:"delay_ms,omitempty"`
	}{Value: raw, DelayMs: ceilMillis(delay)}
	var m messageJSON
	if err := c.do(ctx, request{method: http.MethodPost, path: pathOf("v1/queues", queue, "messages"), body: body}, &m); err != nil {
		return nil, err
	}
	return c.newMessage(queue, m), nil
}

// ClaimOptions says how to claim.
type ClaimOptions struct {
	// Visibility is how long the messages stay claimed unless acked,
	// released or extended; then they are visible again, for another
	// claim. Required; the server caps it (12 h).
	Visibility time.Duration
	// Wait is how long the server waits for a message when none is
	// visible; the server caps it (60 s by default). 0: not at all.
	Wait time.Duration
	// Max is the most messages to take (1 when 0; at most 100).
	Max int
}

// Claim takes up to opts.Max visible messages of queue, oldest first, as
// the client's worker, waiting up to opts.Wait for one; none when the wait
// ends first. Ack each message once its work is done: one neither acked
// nor released within opts.Visibility (the worker crashed) is claimed
// again, with Attempts one more.
func (c *Client) Claim(ctx context.Context, queue string, opts ClaimOptions) ([]*QueueMessage, error) {
	if err := checkName("queue name", queue); err != nil {
		return nil, err
	}
	if opts.Visibility <= 0 || opts.Wait < 0 || opts.Max < 0 {
		return nil, fmt.Errorf("memsync: claim from %q: visibility must be positive, wait and max not negative: %w", queue, ErrInvalid)
	}
	body := struct {
		VisibilityMs int64 `json:"visibility_ms"`
		WaitMs       int64 `json:"wait_ms,omitempty"`
		Max          int   `json:"max,omitempty"`
	}{VisibilityMs: ceilMillis(opts.Visibility), WaitMs: ceilMillis(opts.Wait), Max: opts.Max}
	var out struct {
		Messages []messageJSON `json:"messages"`
	}
	if err := c.do(ctx, request{method: http.MethodPost, path: pathOf("v1/queues", queue, "claim"), body: body}, &out); err != nil {
		return nil, err
	}
	msgs := make([]*QueueMessage, len(out.Messages))
	for i, m := range out.Messages {
		msgs[i] = c.newMessage(queue, m)
	}
	return msgs, nil
}

// Ack deletes the claimed message: its work is done. It returns an error
// matching ErrNotClaimed when the claim no longer holds it (its visibility
// timeout passed and another claim took it; or it was released or acked).
func (m *QueueMessage) Ack(ctx context.Context) error {
	h := http.Header{"X-Receipt": {m.Receipt}}
	return m.c.do(ctx, request{method: http.MethodDelete, path: pathOf("v1/queues", m.queue, "messages", m.ID), header: h}, nil)
}

// Release gives the claimed message back, visible after delay (0: at
// once), for another claim. Errors as Ack's.
func (m *QueueMessage) Release(ctx context.Context, delay time.Duration) error {
	if delay < 0 {
		return fmt.Errorf("memsync: negative delay %v: %w", delay, ErrInvalid)
	}
	body := struct {
		Receipt string `json:"receipt"`
		DelayMs int64  `json:"delay_ms,omitempty"`
	}{Receipt: m.Receipt, DelayMs: ceilMillis(delay)}
	return m.c.do(ctx, request{method: http.MethodPost, path: pathOf("v1/queues", m.queue, "messages", m.ID, "release"), body: body}, nil)
}

// Extend sets the claim's visibility timeout to visibility from now, for
// work that takes longer than first thought, and updates VisibleAt. Errors
// as Ack's, and also when a claim found the timeout passed.
func (m *QueueMessage) Extend(ctx context.Context, visibility time.Duration) error {
	if visibility <= 0 {
		return fmt.Errorf("memsync: visibility %v must be positive: %w", visibility, ErrInvalid)
	}
	body := struct {
		Receipt      string `json:"receipt"`
		VisibilityMs int64  `json:"visibility_ms"`
	}{Receipt: m.Receipt, VisibilityMs: ceilMillis(visibility)}
	var out struct {
		VisibleAt int64 `json:"visible_at"`
	}
	if err := m.c.do(ctx, request{method: http.MethodPost, path: pathOf("v1/queues", m.queue, "messages", m.ID, "extend"), body: body}, &out); err != nil {
		return err
	}
	m.VisibleAt = fromMillis(out.VisibleAt)
	return nil
}

// QueueStats count a queue's messages.
type QueueStats struct {
	Visible  int `json:"visible"`   // claimable now
	Delayed  int `json:"delayed"`   // visible later
	InFlight int `json:"in_flight"` // claimed, their visibility timeout running
}

// QueueStats counts queue's messages; a queue never used has none.
func (c *Client) QueueStats(ctx context.Context, queue string) (QueueStats, error) {
	if err := checkName("queue name", queue); err != nil {
		return QueueStats{}, err
	}
	var s QueueStats
	err := c.do(ctx, request{method: http.MethodGet, path: pathOf("v1/queues", queue)}, &s)
	return s, err
}

// PurgeQueue deletes queue and every message in it, claimed or not, and
// returns how many there were: an administrator's.
func (c *Client) PurgeQueue(ctx context.Context, queue string) (int, error) {
	if err := checkName("queue name", queue); err != nil {
		return 0, err
	}
	var out struct {
		Purged int `json:"purged"`
	}
	err := c.do(ctx, request{method: http.MethodDelete, path: pathOf("v1/queues", queue)}, &out)
	return out.Purged, err
}
