package rediserr_test

import (
	"errors"
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
