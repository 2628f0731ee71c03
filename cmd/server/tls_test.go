package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// issue makes a certificate for tmpl, signed by parent's key, or
// self-signed when parent is nil, and returns it with its key.
func issue(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// writePEM writes certificates, and a key when not nil, to file as PEM.
func writePEM(t *testing.T, file string, key *ecdsa.PrivateKey, certs ...*x509.Certificate) {
	t.Helper()
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if key != nil {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...)
	}
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeCertificate writes a self-signed certificate for 127.0.0.1 with the
// given serial number, and its key, as PEM files in dir, and returns their
// paths and the certificate.
func writeCertificate(t *testing.T, dir string, serial int64) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	cert, key := issue(t, &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "memsync test"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil, nil)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePEM(t, certFile, nil, cert)
	writePEM(t, keyFile, key)
	return certFile, keyFile, cert
}

// authority is a certificate authority for client certificates.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newAuthority(t *testing.T, name string) authority {
	cert, key := issue(t, &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil, nil)
	return authority{cert, key}
}

// client issues a client certificate with the subject common name cn and
// URI names uris.
func (a authority) client(t *testing.T, cn string, uris ...string) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: cn},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	cert, key := issue(t, tmpl, a.cert, a.key)
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// trusting is an HTTPS client that trusts only certs.
func trusting(certs ...*x509.Certificate) *http.Client {
	return showing(nil, certs...)
}

// showing is an HTTPS client that trusts only certs and shows mine, when
// not nil, to a server that asks for a client certificate.
func showing(mine *tls.Certificate, certs ...*x509.Certificate) *http.Client {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	// A session cache, so that a new connection offers to resume the
	// last one.
	conf := &tls.Config{RootCAs: pool, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	if mine != nil {
		conf.Certificates = []tls.Certificate{*mine}
	}
	return &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}}
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
	catchHangUp(t)

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

func TestMutualTLS(t *testing.T) {
	catchHangUp(t)

	dir := t.TempDir()
	certFile, keyFile, server := writeCertificate(t, dir, 1)
	first, second := newAuthority(t, "clients 1"), newAuthority(t, "clients 2")
	caFile := filepath.Join(dir, "clients.pem")
	writePEM(t, caFile, nil, first.cert)
	w1 := first.client(t, "w1")
	good := showing(&w1, server)
	base := launch(t, good, "https", nil, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-client-ca", caFile)

	// served reports whether a fresh client showing mine (nil: no
	// certificate) gets a 200 from /healthz, and the error if not.
	served := func(mine *tls.Certificate) error {
		res, err := showing(mine, server).Get(base + "/healthz")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	}

	req, _ := http.NewRequest("PUT", base+"/v1/kv/tasks/T1/state", strings.NewReader(`{"value":{"status":"running"}}`))
	req.Header.Set("X-Worker-Id", "w1")
	res, err := good.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.ProtoMajor != 2 {
		t.Fatalf("PUT with a client certificate = %d over %s, want 200 over HTTP/2", res.StatusCode, res.Proto)
	}
	// Sessions resume (which the check after the reload below relies on).
	good.CloseIdleConnections()
	if res, err := good.Get(base + "/healthz"); err != nil {
		t.Fatal(err)
	} else if res.Body.Close(); !res.TLS.DidResume {
		t.Error("a new connection of the same client did not resume its session")
	}
	if err := served(nil); err == nil {
		t.Error("a client without a certificate was served")
	}
	stranger := newAuthority(t, "clients 1").client(t, "w1") // same names, another key
	if err := served(&stranger); err == nil {
		t.Error("a client with a certificate from an unknown authority was served")
	}

	// SIGHUP reads the authorities again: the first one's clients are
	// refused on new connections, the second one's served.
	writePEM(t, caFile, nil, second.cert)
	hangUpAndAwaitLog(t, base, "TLS certificate reloaded")
	if err := served(&w1); err == nil {
		t.Error("after the first authority was removed, its client was served on a new connection")
	}
	w2 := second.client(t, "w2")
	if err := served(&w2); err != nil {
		t.Errorf("a client of the new authority: %v", err)
	}
	// A connection already open keeps going; a new one of the same
	// client, offering to resume that session, is refused.
	if res, err := good.Get(base + "/healthz"); err != nil {
		t.Errorf("the connection opened before the reload: %v", err)
	} else {
		res.Body.Close()
	}
	good.CloseIdleConnections()
	if res, err := good.Get(base + "/healthz"); err == nil {
		res.Body.Close()
		t.Error("after the first authority was removed, its client was served on a new, resumed connection")
	}

	// A file without certificates is reported, and the authorities in use
	// stay.
	if err := os.WriteFile(caFile, []byte("no certificates here"), 0o600); err != nil {
		t.Fatal(err)
	}
	hangUpAndAwaitLog(t, base, "TLS certificate NOT reloaded")
	if err := served(&w2); err != nil {
		t.Errorf("after a broken client-ca file, a client of the authority in use: %v", err)
	}
}

// With mutual TLS and a token file that names client certificates
// (cert:<name>), a client's certificate says which worker it is and what
// it may do, as a token would: by the subject common name, else by a URI
// name. A bearer token, when sent, still decides; a certificate the file
// does not name gets 401; and a reload that drops a certificate's entry
// refuses it and ends its watch stream.
func TestClientCertificateNamesWorker(t *testing.T) {
	catchHangUp(t)

	dir := t.TempDir()
	certFile, keyFile, server := writeCertificate(t, dir, 1)
	ca := newAuthority(t, "clients")
	caFile, tokens := filepath.Join(dir, "clients.pem"), filepath.Join(dir, "tokens")
	writePEM(t, caFile, nil, ca.cert)
	writeTokens := func(text string) {
		t.Helper()
		if err := os.WriteFile(tokens, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const admin = "0123456789abcdef-admin"
	writeTokens(admin + " ops admin\ncert:w7 w7 worker\ncert:spiffe://example.org/board board reader\n")
	w7 := ca.client(t, "w7")
	base := launch(t, showing(&w7, server), "https", nil, "--tls-cert", certFile, "--tls-key", keyFile,
		"--tls-client-ca", caFile, "--tokens", tokens)

	// do sends a request as the client showing mine, with token when not
	// "", and returns the status and the body's "writer" or "code".
	do := func(mine tls.Certificate, method, path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(`{"value":1}`))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := showing(&mine, server).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body struct{ Writer, Code string }
		json.NewDecoder(res.Body).Decode(&body)
		return res.StatusCode, body.Writer + body.Code
	}
	board := ca.client(t, "board-host-3", "spiffe://example.org/board")
	stranger := ca.client(t, "w9", "spiffe://example.org/w9")
	for _, tt := range []struct {
		name         string
		mine         tls.Certificate
		method, path string
		token        string
		status       int
		said         string
	}{
		{"by common name", w7, "PUT", "/v1/kv/tasks/T1/state", "", 200, "w7"},
		{"a worker's rules", w7, "PUT", "/v1/kv/workers/w8/status", "", 403, "forbidden"},
		{"its own worker key", w7, "PUT", "/v1/kv/workers/w7/status", "", 200, "w7"},
		{"by URI name: a reader reads", board, "GET", "/v1/kv/tasks/T1/state", "", 200, "w7"},
		{"by URI name: a reader does not write", board, "PUT", "/v1/kv/tasks/T1/state", "", 403, "forbidden"},
		{"a certificate not named", stranger, "GET", "/v1/kv/tasks/T1/state", "", 401, "unauthorized"},
		{"a token decides", stranger, "PUT", "/v1/kv/tasks/T2/state", admin, 200, "ops"},
		{"a bad token is not made up for by the certificate", w7, "GET", "/v1/kv/tasks/T1/state", "wrong-0123456789abcdef", 401, "unauthorized"},
		{"a certificate name is no token", stranger, "GET", "/v1/kv/tasks/T1/state", "cert:w7", 401, "unauthorized"},
	} {
		if status, said := do(tt.mine, tt.method, tt.path, tt.token); status != tt.status || said != tt.said {
			t.Errorf("%s: %s %s = %d %q, want %d %q", tt.name, tt.method, tt.path, status, said, tt.status, tt.said)
		}
	}

	// Dropping w7's entry refuses it and ends its watch stream.
	heard := watchDataWith(t, showing(&w7, server), base, "tasks/**")
	writeTokens(admin + " ops admin\ncert:spiffe://example.org/board board reader\n")
	hangUpAndAwaitLog(t, base, "tokens reloaded")
	if status, said := do(w7, "GET", "/v1/kv/tasks/T1/state", ""); status != 401 || said != "unauthorized" {
		t.Errorf("w7 after its entry was dropped: %d %q, want 401 unauthorized", status, said)
	}
	select {
	case line, open := <-heard:
		if open {
			t.Errorf("w7's watch stream went on after its entry was dropped: %s", line)
		}
	case <-time.After(5 * time.Second):
		t.Error("w7's watch stream still open 5 s after its entry was dropped")
	}
	if status, said := do(board, "GET", "/v1/kv/tasks/T1/state", ""); status != 200 || said != "w7" {
		t.Errorf("board after the reload: %d %q, want 200 from w7", status, said)
	}
}

// A token file that names client certificates, on a server that asks for
// none, is worth a warning: those entries can never serve.
func TestWarnsOfCertificateNamesWithoutClientCA(t *testing.T) {
	for _, tt := range []struct {
		file string
		warn bool
	}{
		{"0123456789abcdef-admin ops admin\ncert:w7 w7 worker\n", true},
		{"0123456789abcdef-admin ops admin\n", false},
	} {
		tokens := filepath.Join(t.TempDir(), "tokens")
		if err := os.WriteFile(tokens, []byte(tt.file), 0o600); err != nil {
			t.Fatal(err)
		}
		base := startServer(t, nil, "--tokens", tokens)
		logs, _ := serverLogs.Load(base)
		if got := strings.Contains(logs.(*syncBuffer).String(), "names 1 client certificates"); got != tt.warn {
			t.Errorf("token file %q: warned %v, want %v", tt.file, got, tt.warn)
		}
	}
}
