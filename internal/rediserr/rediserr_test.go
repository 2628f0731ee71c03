package rediserr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/memsync/memsync/internal/rediserr"
)

func TestTransient(t *testing.T) {
	for _, tt := range []struct {
		msg  string
		want bool
	}{
		{"LOADING Redis is loading the dataset in memory", true},
		{"MOVED 10420 127.0.0.1:35591", true},
		{"ASK 10420 127.0.0.1:35591", true},
		{"NOSCRIPT No matching script. Please use EVAL.", true},
		{"READONLY You can't write against a read only replica.", true},
		{"BUSY Redis is busy running a script.", true},
		{"CLUSTERDOWN The cluster is down", true},
		{"ERR wrong number of arguments for 'get' command", false},
		{"WRONGTYPE Operation against a key holding the wrong kind of value", false},
		{"ERR Error running script: user_script:1: Script attempted to access nonexistent global variable", false},
		{"BUSYKEY Target key name already exists.", false},
		{"ASKING", false},
	} {
		if got := rediserr.Transient(tt.msg); got != tt.want {
			t.Errorf("Transient(%q) = %v, want %v", tt.msg, got, tt.want)
		}
	}
}

func TestMoved(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("MOVED 10420 127.0.0.1:35591"), true},
		{errors.New("ASK 10420 127.0.0.1:35591"), false},
		{errors.New("EXECABORT Transaction discarded because of previous errors."), false},
		{errors.New("read tcp 127.0.0.1:1->127.0.0.1:2: i/o timeout"), false},
	} {
		if got := rediserr.Moved(tt.err); got != tt.want {
			t.Errorf("Moved(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestRefused(t *testing.T) {
	for _, tt := range []struct {
		err  error
		kind rediserr.Refusal
		addr string
	}{
		{nil, rediserr.NotRefused, ""},
		{errors.New("MOVED 10420 127.0.0.1:35591"), rediserr.RefusedMoved, "127.0.0.1:35591"},
		{errors.New("ASK 10420 127.0.0.1:35591"), rediserr.RefusedAsk, "127.0.0.1:35591"},
		{errors.New("TRYAGAIN Multiple keys request during rehashing of slot"), rediserr.RefusedTryAgain, ""},
		{errors.New("ASK 10420"), rediserr.NotRefused, ""},
		{errors.New("ASKING"), rediserr.NotRefused, ""},
		{errors.New("CLUSTERDOWN The cluster is down"), rediserr.NotRefused, ""},
		{errors.New("read tcp 127.0.0.1:1->127.0.0.1:2: i/o timeout"), rediserr.NotRefused, ""},
	} {
		if kind, addr := rediserr.Refused(tt.err); kind != tt.kind || addr != tt.addr {
			t.Errorf("Refused(%v) = %v, %q; want %v, %q", tt.err, kind, addr, tt.kind, tt.addr)
		}
	}
}

func TestUnavailable(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"), true},
		{"transient reply", reply("LOADING Redis is loading the dataset in memory"), true},
		{"script gone", fmt.Errorf("wrapped: %w", reply("NOSCRIPT No matching script")), true},
		{"a bug's reply", reply("ERR wrong number of arguments for 'hset' command"), false},
		{"cancelled", context.Canceled, false},
		{"timed out", fmt.Errorf("read: %w", context.DeadlineExceeded), false},
	} {
		if got := rediserr.Unavailable(tt.err); got != tt.want {
			t.Errorf("%s: Unavailable(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// reply is an error reply as go-redis returns one (a redis.Error).
type reply string

func (r reply) Error() string { return string(r) }
func (reply) RedisError()     {}

func TestWrap(t *testing.T) {
	errDown := errors.New("pkg: backend unavailable")
	for _, tt := range []struct {
		name     string
		err      error
		down     bool
		wantText string
	}{
		{"connection refused", errors.New("dial tcp: connection refused"), true, `pkg: backend unavailable: get "k": dial tcp: connection refused`},
		{"transient reply", reply("LOADING loading"), true, `pkg: backend unavailable: get "k": LOADING loading`},
		{"bug's reply", reply("ERR wrong number of arguments"), false, `pkg: get "k": ERR wrong number of arguments`},
		{"caller gave up", context.Canceled, false, `pkg: get "k": context canceled`},
	} {
		got := rediserr.Wrap("pkg", errDown, "get", "k", tt.err)
		if errors.Is(got, errDown) != tt.down || !errors.Is(got, tt.err) || got.Error() != tt.wantText {
			t.Errorf("%s: Wrap = %q (unavailable %v), want %q (unavailable %v)", tt.name, got, errors.Is(got, errDown), tt.wantText, tt.down)
		}
	}
	if !rediserr.NoScript(reply("NOSCRIPT No matching script.")) || rediserr.NoScript(nil) || rediserr.NoScript(errDown) {
		t.Error("NoScript misreads a NOSCRIPT reply, nil or another error")
	}
}
