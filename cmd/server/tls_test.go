package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeCertificate writes a self-signed certificate for 127.0.0.1 with the
// given serial number, and its key, as PEM files in dir, and returns their
// paths and the certificate.
func writeCertificate(t *testing.T, dir string, serial int64) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "memsync test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// trusting is an HTTPS client that trusts only certs.
func trusting(certs ...*x509.Certificate) *http.Client {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
}

// servedSerial is the serial number of the certificate a new TLS connection
// to addr is shown.
func servedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // only reads the certificate
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestTLS(t *testing.T) {
	// Caught here too, so that a SIGHUP can never end the test process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	dir := t.TempDir()
	certFile, keyFile, first := writeCertificate(t, dir, 1)
	client := trusting(first)
	client.Timeout = 0 // a watch stream outlives any timeout
	base := launch(t, client, "https", nil, "--tls-cert", certFile, "--tls-key", keyFile)
	addr := strings.TrimPrefix(base, "https://")
	heard := watchDataWith(t, client, base, "tasks/**")

	req, _ := http.NewRequest("PUT", base+"/v1/kv/tasks/T1/state", strings.NewReader(`{"value":{"status":"running"}}`))
	req.Header.Set("X-Worker-Id", "w1")
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("PUT over HTTPS = %d", res.StatusCode)
	}
	if res.ProtoMajor != 2 {
		t.Errorf("PUT over HTTPS spoke %s, want HTTP/2", res.Proto)
	}
	res, err = client.Get(base + "/v1/kv/tasks/T1/state")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `"value":{"status":"running"}`) {
		t.Errorf("GET over HTTPS = %d %s", res.StatusCode, body)
	}
	// Server-sent events stream over HTTP/2 too.
	select {
	case line := <-heard:
		if !strings.Contains(line, `"type":"put"`) || !strings.Contains(line, `"key":"tasks/T1/state"`) {
			t.Errorf("watch over HTTPS heard %s, want the put of tasks/T1/state", line)
		}
	case <-time.After(5 * time.Second):
		t.Error("watch over HTTPS heard nothing within 5 s of the PUT")
	}

	// Plain HTTP on the same port is refused, not served.
	res, err = http.Get("http://" + addr + "/v1/kv/tasks/T1/state")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 400 || strings.Contains(string(body), "running") {
		t.Errorf("plain HTTP to the HTTPS port = %d %s, want 400 without the value", res.StatusCode, body)
	}
	// A client that does not trust the certificate does not get through.
	if _, err := trusting().Get(base + "/healthz"); err == nil {
		t.Error("a client without the certificate in its roots connected")
	}

	// A renewed certificate is served after SIGHUP, to new connections.
	_, _, second := writeCertificate(t, dir, 2)
	for deadline := time.Now().Add(5 * time.Second); servedSerial(t, addr) != 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("serial %d served 5 s after SIGHUP, want 2", servedSerial(t, addr))
		}
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := trusting(second).Get(base + "/healthz"); err != nil {
		t.Errorf("the renewed certificate: %v", err)
	} else {
		res.Body.Close()
	}

	// A broken pair is reported, and the certificate in use stays.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	hangUpAndAwaitLog(t, base, "TLS certificate NOT reloaded")
	if got := servedSerial(t, addr); got != 2 {
		t.Errorf("after a broken key: serial %d served, want 2 (the one in use)", got)
	}
}
