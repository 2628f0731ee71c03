//go:build !linux

package main

import (
	"errors"
	"sync/atomic"
)

// Without epoll every stream is read by a goroutine of its own.

func fanReaders() int { return 0 }

func (w *watcher) takeOver() error { return nil }

type readLoop struct{ lat latencies }

func newReadLoop() (*readLoop, error) { return nil, errors.New("no epoll on this system") }

func (l *readLoop) add(*watcher) error              { return errors.New("no epoll on this system") }
func (l *readLoop) run(*atomic.Int64, *atomic.Bool) {}
func (l *readLoop) close()                          {}
