package watch_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// proxy is a TCP proxy in front of a Redis, so that a test can break the
// hub's connections (and keep them broken) while writers, on their own
// client, carry on: a CLIENT KILL that works on miniredis too.
type proxy struct {
	addr   string
	target string
	ln     net.Listener

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]*atomic.Bool // the flag drops the connection's traffic
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]*atomic.Bool{}}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.cut(true)
	})
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		hole := new(atomic.Bool)
		p.mu.Lock()
		p.conns[c], p.conns[up] = hole, hole
		p.mu.Unlock()
		go pipe(up, c, hole)
		go pipe(c, up, hole)
	}
}

// pipe copies src to dst until either fails, dropping the bytes while
// hole is set.
func pipe(dst, src net.Conn, hole *atomic.Bool) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !hole.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// blackhole silently drops all traffic of the current connections, as a
// network partition does: nothing errors, nothing arrives.
func (p *proxy) blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, hole := range p.conns {
		hole.Store(true)
	}
}

// cut closes every proxied connection; with down, new ones are refused
// until restore.
func (p *proxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}
