// Package client is a Go client for memsync, the HTTP/JSON coordination
// service: versioned keys with conflict resolution, leased and fenced locks,
// worker heartbeats, and the Task Sentinel calls (task state and progress,
// agent coordination, the shared queue) built on them.
//
// It uses only the standard library. One *Client is safe for concurrent use
// by any number of goroutines and should be reused:
//
//	c, err := client.New("http://127.0.0.1:8080", client.WithWorkerID("w1"))
//	if err != nil { … }
//	e, err := c.SyncTaskState(ctx, "T1", map[string]string{"status": "running"})
//
// # Versions and siblings
//
// Every value carries a vector clock, Entry.Version. A write that sends a
// version it has read as its context (WithContext) supersedes everything that
// version has seen; a write without one supersedes only the same worker's
// earlier writes and is kept beside other workers' concurrent writes as a
// sibling. The server resolves siblings on read by the key's strategy (lww,
// union, merge, max) or hands them all to the client (Resolve("siblings")).
// Update does the read, modify, compare-and-set write cycle with retries.
// GetIfChanged polls cheaply: the server sends nothing while the key is as
// an earlier read left it; with WaitForChange it blocks until the key
// changes (or, with Get, until it is created), for up to a minute.
// Patch and PatchOps change part of a value (a JSON merge patch, a JSON
// Patch) in one call, which the server applies again when the key changed
// under it. Entries reads every key under a prefix with its entry.
//
// # Authentication
//
// A server started with tokens wants one: WithToken. Its worker id is then
// the writer of every write; what its role may not do fails with
// ErrForbidden, a missing or unknown token with ErrUnauthorized, and too
// many requests with ErrRateLimited (wait APIError.RetryAfter).
//
// # Errors
//
// Every non-2xx answer is an *APIError. Test it with errors.Is against the
// sentinels (ErrNotFound, ErrPreconditionFailed, ErrLockHeld, …) and read its
// fields with errors.As. Transport failures and cancelled contexts come back
// wrapped as they are, and match none of the sentinels.
//
// # Timeouts and sending again
//
// A write whose answer is lost (a timeout, a broken connection, a 503) may
// have been applied. Put, PutAsync, the typed writes and Lock take
// IdempotencyKey, and BatchIdempotent and BatchAtomicIdempotent take one
// for a batch: sent again
// under the same key, a write the server applied already is answered, not
// applied again (Entry.Replayed, Lock.Replayed, BatchResult.Replayed).
// WithRetries sends failed reads and such writes again by itself, giving
// every write a key of its own when the call names none.
//
// # Locks
//
// Lock and AcquireTaskLock return a *Lock handle holding the lease's token and
// its fencing token. A lease can end without its holder knowing (a pause, a
// partition): pass Lock.Fence to the storage the lock protects, and watch the
// channel of Lock.Keep if the work outlives one TTL.
//
// # Batches and queued writes
//
// Batch runs up to MaxBatchOps gets, puts and deletes in one request, each
// standing alone or, atomic, all or nothing. PutAsync is the design
// document's write(): the server answers as soon as it has queued the write
// and flushes its queue to Redis in batches; Sync is its forceSync().
//
// # Watching changes
//
// Watch subscribes to the changes of the keys matching a glob or a regular
// expression (the design document's subscribe) and delivers them on a
// channel, reconnecting by itself without losing events; an EventReset says
// events were lost anyway and the state must be read again. Types narrows
// it to some kinds of change (expiries alone, say); Initial starts it with
// the current state of the keys. Mirror builds on that a local copy of the
// keys, kept current (Changed says when), which starts over from a new
// state after a reset.
package client
