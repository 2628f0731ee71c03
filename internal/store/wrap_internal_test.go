package store

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/redis/go-redis/v9"
)

// replyError is a Redis reply error, as go-redis returns one.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

var _ redis.Error = replyError("")

// wrap tells a Redis that cannot serve now (503, retry) from a request that
// is wrong (500): a reply error is a bug unless it is one of the transient
// ones.
func TestWrapClassifiesRedisFailures(t *testing.T) {
	for _, tt := range []struct {
		err         error
		unavailable bool
	}{
		{io.EOF, true},
		{replyError("LOADING Redis is loading the dataset in memory"), true},
		{replyError("READONLY You can't write against a read only replica."), true},
		{replyError("MASTERDOWN Link with MASTER is down"), true},
		{replyError("NOSCRIPT No matching script. Please use EVAL."), true},
		{replyError("ERR wrong number of arguments for 'hset' command"), false},
		{replyError("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
		{context.Canceled, false},
	} {
		err := wrap("put", "k", tt.err)
		if got := errors.Is(err, ErrUnavailable); got != tt.unavailable {
			t.Errorf("wrap(%v): unavailable %v, want %v", tt.err, got, tt.unavailable)
		}
		if !errors.Is(err, tt.err) {
			t.Errorf("wrap(%v) = %v: the cause is lost", tt.err, err)
		}
	}
}
