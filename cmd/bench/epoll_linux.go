package main

import (
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// takeOver hands w's socket to an epoll reader: a duplicate of it, in
// non-blocking mode, as w.fd; the connection itself is closed.
func (w *watcher) takeOver() error {
	conn := w.conn
	sc, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var derr error
	if err := sc.Control(func(fd uintptr) { w.fd, derr = syscall.Dup(int(fd)) }); err != nil {
		return err
	}
	if derr != nil {
		return fmt.Errorf("dup the socket: %w", derr)
	}
	w.raw = true
	if err := syscall.SetNonblock(w.fd, true); err != nil {
		return err
	}
	w.conn, w.body = nil, nil
	return conn.Close() // the duplicate keeps the connection open
}

// fanReaders is how many epoll readers share the streams: one per CPU.
func fanReaders() int { return max(1, runtime.GOMAXPROCS(0)) }

// readLoop reads its share of the raw streams: it waits for any of them to
// have data (epoll, level-triggered) and reads each that has, at most
// fanReadBuf at a time, into one buffer.
type readLoop struct {
	epfd int
	ws   []*watcher // by the index in the epoll event
	lat  latencies  // of every watcher it reads
}

func newReadLoop() (*readLoop, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	return &readLoop{epfd: fd}, nil
}

func (l *readLoop) add(w *watcher) error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(len(l.ws))}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, w.fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	l.ws = append(l.ws, w)
	w.lat = &l.lat
	return nil
}

// run reads until closing is set, adding the writes the streams bring to
// delivered.
func (l *readLoop) run(delivered *atomic.Int64, closing *atomic.Bool) {
	buf := make([]byte, fanReadBuf)
	events := make([]syscall.EpollEvent, 128)
	open := len(l.ws)
	for open > 0 && !closing.Load() {
		n, err := syscall.EpollWait(l.epfd, events, 50) // ms: to notice closing
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			w := l.ws[ev.Fd]
			if w.fd < 0 {
				continue
			}
			m, err := syscall.Read(w.fd, buf)
			if m > 0 {
				// One clock reading per read: every event in it arrived then.
				if got := w.feed(buf[:m], time.Now().UnixNano()); got > 0 {
					delivered.Add(got)
				}
				continue
			}
			if err == syscall.EAGAIN || err == syscall.EINTR {
				continue
			}
			// EOF or a failure: the server ended the stream.
			w.ended = !closing.Load()
			_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, w.fd, nil)
			_ = syscall.Close(w.fd)
			w.fd = -1
			open--
		}
	}
}

// close closes the streams still open, and the epoll instance; after run.
func (l *readLoop) close() {
	for _, w := range l.ws {
		if w.fd >= 0 {
			_ = syscall.Close(w.fd)
			w.fd = -1
		}
	}
	_ = syscall.Close(l.epfd)
}
