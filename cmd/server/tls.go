package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
)

// certificate is the server's TLS set-up: the certificate it presents
// (--tls-cert, --tls-key) and, with --tls-client-ca, the authorities whose
// client certificates it accepts (mutual TLS). The files are read at
// start, so that a bad one stops the process before it listens, and again
// at every SIGHUP, so that a renewed certificate or a changed set of
// authorities takes effect without a restart; connections already open
// keep what they began with.
type certificate struct {
	certFile, keyFile, clientCAFile string
	// current is the configuration new connections get, rebuilt whole at
	// every reload.
	current atomic.Pointer[tls.Config]
}

// loadCertificate reads a PEM certificate (chain) and its private key, and
// the client authorities when clientCAFile is not empty.
func loadCertificate(certFile, keyFile, clientCAFile string) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile, clientCAFile: clientCAFile}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the files again; on any error everything in use stays.
func (c *certificate) reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls-cert %s, tls-key %s: %w", c.certFile, c.keyFile, err)
	}
	conf := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		// net/http sets these on the configuration it is given, not on
		// the one GetConfigForClient hands each handshake.
		NextProtos: []string{"h2", "http/1.1"},
	}
	if c.clientCAFile != "" {
		pool, err := loadClientCAs(c.clientCAFile)
		if err != nil {
			return err
		}
		conf.ClientAuth = tls.RequireAndVerifyClientCert
		// crypto/tls checks a resumed session's chain against these
		// too, so removing an authority stops its clients' resumptions
		// as well (TestMutualTLS).
		conf.ClientCAs = pool
	}
	c.current.Store(conf)
	return nil
}

// loadClientCAs reads a PEM bundle of certificate authorities.
func loadClientCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tls-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls-client-ca %s: no PEM certificate in it", file)
	}
	return pool, nil
}

// config is the server's TLS configuration: TLS 1.2 at least, HTTP/2 and
// HTTP/1.1, and the certificate (and client authorities) as last loaded.
func (c *certificate) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return c.current.Load(), nil
		},
	}
}
