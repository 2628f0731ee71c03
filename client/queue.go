package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
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
	// Receipt proves the claim; empty for a message just enqueued, and for
	// a dead letter.
	Receipt string
	// MaxAttempts bounds Attempts (0: no bound): a message claimed that
	// many times goes to the dead letters when it would be claimed again.
	MaxAttempts int
	// Replayed reports an Enqueue answered from its idempotency key: the
	// message was added by an earlier call, and this one added nothing.
	Replayed bool
	// DeadAt and Owner (the latest claimant) are a dead letter's
	// (DeadLetters).
	DeadAt time.Time
	Owner  string
	// ExpiresAt is when the message expires (EnqueueOptions.TTL); zero
	// when it lives until acked.
	ExpiresAt time.Time

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
	// MaxAttempts is 0 (absent) when unbounded.
	MaxAttempts int    `json:"max_attempts"`
	DeadAt      int64  `json:"dead_at"`
	Owner       string `json:"owner"`
	ExpiresAt   int64  `json:"expires_at"`
}

func (c *Client) newMessage(queue string, m messageJSON) *QueueMessage {
	out := &QueueMessage{ID: m.ID, Value: m.Value, Attempts: m.Attempts, EnqueuedAt: fromMillis(m.EnqueuedAt),
		VisibleAt: fromMillis(m.VisibleAt), Receipt: m.Receipt, MaxAttempts: m.MaxAttempts, Owner: m.Owner, c: c, queue: queue}
	if m.DeadAt != 0 {
		out.DeadAt = fromMillis(m.DeadAt)
	}
	if m.ExpiresAt != 0 {
		out.ExpiresAt = fromMillis(m.ExpiresAt)
	}
	return out
}

// Decode unmarshals the message's value into v.
func (m *QueueMessage) Decode(v any) error {
	if m.Value == nil {
		return fmt.Errorf("memsync: message %s of queue %q carries no value", m.ID, m.queue)
	}
	return json.Unmarshal(m.Value, v)
}

// EnqueueOptions say how to add a message. The zero value adds one
// visible at once, claimed as often as it takes.
type EnqueueOptions struct {
	// Delay: the message is visible to claims after it.
	Delay time.Duration
	// MaxAttempts bounds the message's claims (0: no bound; at most 1000).
	// Once claimed that many times, it goes to the queue's dead letters
	// when it would be claimed again.
	MaxAttempts int
	// TTL is how long the message lives (0: until acked; else more than
	// Delay, at most 14 days): past it, a claim deletes it rather than
	// take it.
	TTL time.Duration
	// IdempotencyKey makes the enqueue safe to send again: for an hour the
	// queue answers the same message under the same key with the first
	// one's, adding nothing (QueueMessage.Replayed). A client made
	// WithRetries gives an enqueue without one a key of its own.
	IdempotencyKey string
	// MaxLength, when set, adds the message only while the queue holds
	// fewer messages (visible, delayed and claimed), else an error matching
	// ErrQueueFull: backpressure for a producer faster than its consumers.
	MaxLength int
}

// Enqueue adds value (encoded with encoding/json) to queue (one segment:
// "jobs"). Without an idempotency key (see EnqueueOptions), a message
// sent twice, after a lost answer, is delivered twice: the queue delivers
// at least once, so its consumers must be safe to run twice anyway.
func (c *Client) Enqueue(ctx context.Context, queue string, value any, opts EnqueueOptions) (*QueueMessage, error) {
	if err := checkName("queue name", queue); err != nil {
		return nil, err
	}
	if opts.Delay < 0 || opts.MaxAttempts < 0 || opts.TTL < 0 || opts.MaxLength < 0 {
		return nil, fmt.Errorf("memsync: enqueue to %q: negative delay or max attempts: %w", queue, ErrInvalid)
	}
	raw, err := json.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("memsync: enqueue to %q: %w", queue, err)
	}
	body := struct {
		Value       json.RawMessage `json:"value"`
		DelayMs     int64           `json:"delay_ms,omitempty"`
		MaxAttempts int             `json:"max_attempts,omitempty"`
		TTLMs       int64           `json:"ttl_ms,omitempty"`
		MaxLength   int             `json:"max_length,omitempty"`
	}{Value: raw, DelayMs: ceilMillis(opts.Delay), MaxAttempts: opts.MaxAttempts, TTLMs: ceilMillis(opts.TTL), MaxLength: opts.MaxLength}
	h := http.Header{}
	if key := c.idempotencyKey(opts.IdempotencyKey); key != "" {
		h.Set("Idempotency-Key", key)
	}
	path := pathOf("v1/queues", queue, "messages")
	resp, err := c.send(ctx, request{method: http.MethodPost, path: path, header: h, body: body})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m messageJSON
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return nil, fmt.Errorf("memsync: POST %s: decode %d response: %w", path, resp.StatusCode, err)
	}
	out := c.newMessage(queue, m)
	out.Replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	return out, nil
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
// timeout passed and another claim took it; it was released or acked; or
// it went to the dead letters).
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
	Queue    string `json:"queue"`
	Visible  int    `json:"visible"`   // claimable now
	Delayed  int    `json:"delayed"`   // visible later
	InFlight int    `json:"in_flight"` // claimed, their visibility timeout running
	Dead     int    `json:"dead"`      // dead letters
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

// Queues lists the namespace's queues whose names start with prefix (all
// for ""), by name, with their counts: every queue enqueued to and not
// purged since.
func (c *Client) Queues(ctx context.Context, prefix string) ([]QueueStats, error) {
	var out struct {
		Queues []QueueStats `json:"queues"`
	}
	q := url.Values{}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/queues", query: q}, &out)
	return out.Queues, err
}

// DeadLetterPage is a page of a queue's dead letters.
type DeadLetterPage struct {
	// Dead counts the queue's dead letters in all.
	Dead     int
	Messages []*QueueMessage
	// Cursor, when not empty, reads the next page.
	Cursor string
}

// DeadLetters reads up to limit (0: the server's 100; at most 1000) dead
// letters of queue, in the order added, from after cursor ("": the
// first). A dead letter is a message that had its MaxAttempts claims.
func (c *Client) DeadLetters(ctx context.Context, queue, cursor string, limit int) (DeadLetterPage, error) {
	if err := checkName("queue name", queue); err != nil {
		return DeadLetterPage{}, err
	}
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Dead     int           `json:"dead"`
		Messages []messageJSON `json:"messages"`
		Cursor   string        `json:"cursor"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: pathOf("v1/queues", queue, "dead"), query: q}, &out); err != nil {
		return DeadLetterPage{}, err
	}
	page := DeadLetterPage{Dead: out.Dead, Cursor: out.Cursor, Messages: make([]*QueueMessage, len(out.Messages))}
	for i, m := range out.Messages {
		page.Messages[i] = c.newMessage(queue, m)
	}
	return page, nil
}

// Redrive gives dead letters of queue back, visible at once with their
// attempts counted from 0: those of ids, or without ids the 1000 oldest.
// It returns how many it gave back and how many dead letters are left.
func (c *Client) Redrive(ctx context.Context, queue string, ids ...string) (redriven, left int, err error) {
	if err := checkName("queue name", queue); err != nil {
		return 0, 0, err
	}
	body := struct {
		IDs []string `json:"ids,omitempty"`
	}{IDs: ids}
	var out struct {
		Redriven int `json:"redriven"`
		Dead     int `json:"dead"`
	}
	err = c.do(ctx, request{method: http.MethodPost, path: pathOf("v1/queues", queue, "redrive"), body: body}, &out)
	return out.Redriven, out.Dead, err
}

// DropDeadLetter deletes dead letter id of queue; an error matching
// ErrNotFound when no dead letter has the id.
func (c *Client) DropDeadLetter(ctx context.Context, queue, id string) error {
	if err := checkName("queue name", queue); err != nil {
		return err
	}
	return c.do(ctx, request{method: http.MethodDelete, path: pathOf("v1/queues", queue, "dead", id)}, nil)
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
