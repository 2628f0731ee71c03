// Package rediserr tells the Redis error replies that mean "not now" from
// those that mean "never": the store and the locker both answer the first
// kind with 503 and a retry, the second with 500.
package rediserr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// transientPrefixes start the error replies of a Redis that cannot serve
// right now rather than of a wrong request:
//   - LOADING, MASTERDOWN, CLUSTERDOWN, TRYAGAIN, READONLY, BUSY: starting,
//     failing over, a replica written to, a script running long;
//   - NOSCRIPT: a Redis that just took over (a promoted replica, a restart)
//     has an empty script cache, and a write whose script could not be
//     loaded again is refused whole (TestSentinelFailover met it as a 500);
//   - MOVED, ASK: a Cluster slot moved or is moving (a failover, a
//     resharding). The client does not follow redirects, which would send
//     the command again after a timeout too (cmd/server's redisMaxRetries);
//     cmd/server's followRedirects follows them, and TRYAGAIN, for a
//     while. A command still refused after that ends here.
var transientPrefixes = []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "BUSY ", "NOSCRIPT", "MOVED ", "ASK "}

// Transient reports whether msg, a Redis error reply, means that the
// server cannot serve right now.
func Transient(msg string) bool {
	for _, p := range transientPrefixes {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// Unavailable reports whether err, from a go-redis call, means that Redis
// could not serve: it could not be reached, or answered with a transient
// error reply. Another error reply is a bug or misuse, and a cancelled or
// timed-out context the caller giving up: neither is.
func Unavailable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var reply redis.Error
	return !errors.As(err, &reply) || Transient(reply.Error())
}

// Moved reports whether err, as go-redis returns it, is a Cluster node's
// MOVED refusal ("MOVED <slot> <host:port>"): the slot has another master,
// and the node ran nothing, so the command may be sent again (unlike after
// a timeout) once the client knows the new master.
func Moved(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "MOVED ")
}

// Refusal is how a Cluster node refused a command without running any of
// it, so that it may be sent again (unlike after a timeout).
type Refusal int

const (
	// NotRefused: no error, or one of another kind.
	NotRefused Refusal = iota
	// RefusedMoved: "MOVED <slot> <addr>", the slot has another master,
	// addr. The client reloads its slot map.
	RefusedMoved
	// RefusedAsk: "ASK <slot> <addr>", the slot is migrating to addr, which
	// has the command's keys now (or none of them is anywhere yet) and
	// serves the command when ASKING precedes it on the same connection.
	RefusedAsk
	// RefusedTryAgain: "TRYAGAIN …", the command names several keys of a
	// slot in mid-migration that are not all on one node: it may run once
	// the migration has ended.
	RefusedTryAgain
)

// Refused tells whether err, as go-redis returns it, is a Cluster node's
// refusal of a command it did not run, of which kind, and for MOVED and
// ASK the address of the node to ask instead.
func Refused(err error) (Refusal, string) {
	if err == nil {
		return NotRefused, ""
	}
	msg := err.Error()
	var kind Refusal
	switch {
	case strings.HasPrefix(msg, "MOVED "):
		kind = RefusedMoved
	case strings.HasPrefix(msg, "ASK "):
		kind = RefusedAsk
	case strings.HasPrefix(msg, "TRYAGAIN"):
		return RefusedTryAgain, ""
	default:
		return NotRefused, ""
	}
	f := strings.Fields(msg)
	if len(f) != 3 {
		return NotRefused, ""
	}
	return kind, f[2]
}

// MovedPauses are the waits before each new try of a command refused with
// MOVED, while the client reloads its slot map (at once, or within 200 ms
// when it reloaded just before: go-redis's cool-down), or with TRYAGAIN,
// while a slot's migration ends: 630 ms in all.
var MovedPauses = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond,
	80 * time.Millisecond, 160 * time.Millisecond, 320 * time.Millisecond}

// Wrap names the operation of a failed Redis call for package pkg
// ("store: get \"k\": …") and marks it with unavailable, the package's
// sentinel, when Redis could not serve (Unavailable): the HTTP layer
// answers those 503, the others 500.
func Wrap(pkg string, unavailable error, op, name string, err error) error {
	if !Unavailable(err) {
		return fmt.Errorf("%s: %s %q: %w", pkg, op, name, err)
	}
	return fmt.Errorf("%w: %s %q: %w", unavailable, op, name, err)
}

// NoScript reports a script missing from Redis's cache (a restart emptied
// it, or its first use), which EvalSha in a pipeline cannot load by itself.
func NoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}
