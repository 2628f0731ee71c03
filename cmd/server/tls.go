package main

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
)

// certificate is the TLS certificate the server presents (--tls-cert,
// --tls-key). It is read at start, so that a bad pair stops the process
// before it listens, and again at every SIGHUP, so that a renewed
// certificate takes effect without a restart; connections already open keep
// the one they began with.
type certificate struct {
	certFile, keyFile string
	current           atomic.Pointer[tls.Certificate]
}

// loadCertificate reads a PEM certificate (chain) and its private key.
func loadCertificate(certFile, keyFile string) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the files again; on an error the certificate in use stays.
func (c *certificate) reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls-cert %s, tls-key %s: %w", c.certFile, c.keyFile, err)
	}
	c.current.Store(&pair)
	return nil
}

// config is the server's TLS configuration: TLS 1.2 at least, the
// certificate as last loaded, and the protocols net/http adds (HTTP/2 and
// HTTP/1.1).
func (c *certificate) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.current.Load(), nil
		},
	}
}
