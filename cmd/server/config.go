package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/memsync/memsync/internal/async"
	"github.com/memsync/memsync/internal/auth"
	"github.com/memsync/memsync/internal/cache"
	"github.com/memsync/memsync/internal/embedded"
	memhttp "github.com/memsync/memsync/internal/http"
	"github.com/memsync/memsync/internal/store"
)

// Defaults of the per-token limits: far above what one worker needs, low
// enough that one runaway client cannot take an instance from the others.
const (
	defaultRateLimit           = 1000 // requests per second
	defaultMaxWatchersPerToken = 64
)

// config is the process configuration: flags, each with an environment
// fallback (the flag wins).
type config struct {
	Addr     string
	RedisURL string
	// DataFile keeps the embedded Redis's data across restarts ("": not
	// kept), saved every SaveInterval (0: only at shutdown) and at
	// shutdown. Only without RedisURL.
	DataFile     string
	SaveInterval time.Duration
	Namespace    string
	DefaultTTL   time.Duration
	MaxTTL       time.Duration
	MaxBodyBytes int64
	RulesFile    string
	HeartbeatTTL time.Duration
	MaxLockTTL   time.Duration
	MaxLockWait  time.Duration
	// BatchInterval and BatchSize drive the async write queue: it flushes
	// at least this often, and as soon as this many writes wait.
	BatchInterval time.Duration
	BatchSize     int
	// CacheSize is the read cache's entries per instance; 0 disables it.
	CacheSize int
	// EventLogLen is about how many events the replayable log keeps.
	EventLogLen int64
	// TokensFile names the bearer tokens (auth package); "" runs without
	// authentication, on loopback only unless Insecure.
	TokensFile string
	Tokens     *auth.Tokens
	// RateLimit is each token's requests per second (0: none), and
	// MaxWatchersPerToken its open watch streams (0: no limit).
	RateLimit           int
	MaxWatchersPerToken int
	// ReadTimeout bounds reading a request, headers and body: a client
	// that stalls mid-request is cut off rather than holding a connection.
	ReadTimeout time.Duration
	// TLSCert and TLSKey name a PEM certificate and key: HTTPS instead of
	// HTTP, the pair read again on SIGHUP. Both or neither.
	TLSCert, TLSKey string
	// TLSClientCA names a PEM bundle of certificate authorities: with it,
	// a client must show a certificate one of them signed (mutual TLS).
	TLSClientCA string
	Certificate *certificate
	Insecure    bool
	LogLevel    slog.Level
}

// parseConfig reads flags from args with fallbacks from getenv. A usage
// message goes to out on -h.
func parseConfig(args []string, getenv func(string) string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("memsync", flag.ContinueOnError)
	fs.SetOutput(out)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var defaultTTL, maxTTL, heartbeatTTL, maxLockTTL, maxLockWait, logLevel, batchInterval, readTimeout, saveInterval string
	fs.StringVar(&c.Addr, "addr", env("MEMSYNC_ADDR", "127.0.0.1:8080"), "listen address (MEMSYNC_ADDR)")
	fs.StringVar(&c.RedisURL, "redis-url", env("REDIS_URL", ""), "redis:// or rediss:// URL; a comma-separated list for Cluster; ?master_name= for Sentinel; empty for an embedded, non-persistent Redis (REDIS_URL)")
	fs.StringVar(&c.DataFile, "data-file", env("MEMSYNC_DATA_FILE", ""), "with the embedded Redis: keep its data in this file across restarts, loaded at start and saved every --save-interval and at shutdown; empty: nothing is kept (MEMSYNC_DATA_FILE)")
	fs.StringVar(&saveInterval, "save-interval", env("MEMSYNC_SAVE_INTERVAL", embedded.DefaultSaveInterval.String()), "how often the embedded Redis's data is saved to --data-file when it changed: seconds or a duration; 0: only at shutdown (MEMSYNC_SAVE_INTERVAL)")
	fs.StringVar(&c.Namespace, "namespace", env("MEMSYNC_NAMESPACE", memhttp.DefaultNamespace), "namespace of requests without ?ns= (MEMSYNC_NAMESPACE)")
	fs.StringVar(&defaultTTL, "default-ttl", env("MEMSYNC_DEFAULT_TTL", "3600"), "TTL of writes that name none: seconds or a duration like 1h (MEMSYNC_DEFAULT_TTL)")
	fs.StringVar(&maxTTL, "max-ttl", env("MEMSYNC_MAX_TTL", "720h"), "largest TTL a write may ask for (MEMSYNC_MAX_TTL)")
	fs.Int64Var(&c.MaxBodyBytes, "max-body", envInt(getenv, "MEMSYNC_MAX_BODY", memhttp.DefaultMaxBodyBytes), "largest request body in bytes (MEMSYNC_MAX_BODY)")
	fs.StringVar(&heartbeatTTL, "heartbeat-ttl", env("MEMSYNC_HEARTBEAT_TTL", "30"), "how long a worker stays active after a heartbeat that names no ttl (MEMSYNC_HEARTBEAT_TTL)")
	fs.StringVar(&maxLockTTL, "max-lock-ttl", env("MEMSYNC_MAX_LOCK_TTL", "5m"), "longest lock lease a client may ask for (MEMSYNC_MAX_LOCK_TTL)")
	fs.StringVar(&maxLockWait, "max-lock-wait", env("MEMSYNC_MAX_LOCK_WAIT", "60s"), "longest wait_ms a lock request may ask for (MEMSYNC_MAX_LOCK_WAIT)")
	fs.StringVar(&batchInterval, "batch-interval", env("MEMSYNC_BATCH_INTERVAL", "100ms"), "how often queued ?async=true writes are flushed: a duration like 100ms, or milliseconds (MEMSYNC_BATCH_INTERVAL)")
	fs.IntVar(&c.CacheSize, "cache-size", int(envInt(getenv, "MEMSYNC_CACHE_SIZE", cache.DefaultSize)), "entries in this instance's read cache; 0 disables it (MEMSYNC_CACHE_SIZE)")
	fs.Int64Var(&c.EventLogLen, "event-log-len", envInt(getenv, "MEMSYNC_EVENT_LOG_LEN", store.DefaultEventLogLen), "about how many change events the log keeps for watchers that resume with Last-Event-ID (MEMSYNC_EVENT_LOG_LEN)")
	fs.IntVar(&c.BatchSize, "batch-size", int(envInt(getenv, "MEMSYNC_BATCH_SIZE", async.DefaultSize)), "flush queued writes as soon as this many wait (MEMSYNC_BATCH_SIZE)")
	fs.StringVar(&c.RulesFile, "rules", env("MEMSYNC_RULES", ""), "strategy rules file, YAML or JSON (MEMSYNC_RULES)")
	fs.StringVar(&c.TokensFile, "tokens", env("MEMSYNC_TOKENS", ""), "bearer token file, a line per token: \"token worker-id role [expires=<RFC 3339 time>]\" (admin, worker or reader), or per client certificate name as \"cert:<name> worker-id role\" (with --tls-client-ca), read again on SIGHUP; empty: no authentication (MEMSYNC_TOKENS)")
	fs.IntVar(&c.RateLimit, "rate-limit", int(envInt(getenv, "MEMSYNC_RATE_LIMIT", defaultRateLimit)), "requests per second each token may make, in bursts of twice that; 0: no limit (MEMSYNC_RATE_LIMIT)")
	fs.IntVar(&c.MaxWatchersPerToken, "max-watchers-per-token", int(envInt(getenv, "MEMSYNC_MAX_WATCHERS_PER_TOKEN", defaultMaxWatchersPerToken)), "watch streams and blocking reads (?wait_ms=) each token may hold open; 0: no limit (MEMSYNC_MAX_WATCHERS_PER_TOKEN)")
	fs.StringVar(&readTimeout, "read-timeout", env("MEMSYNC_READ_TIMEOUT", "30s"), "longest time a client may take to send a request, headers and body: seconds or a duration (MEMSYNC_READ_TIMEOUT)")
	fs.StringVar(&c.TLSCert, "tls-cert", env("MEMSYNC_TLS_CERT", ""), "PEM certificate (chain) to serve HTTPS with, read again on SIGHUP; needs --tls-key (MEMSYNC_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", env("MEMSYNC_TLS_KEY", ""), "PEM private key of --tls-cert (MEMSYNC_TLS_KEY)")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", env("MEMSYNC_TLS_CLIENT_CA", ""), "PEM certificate authorities: clients must show a certificate one of them signed (mutual TLS), read again on SIGHUP; needs --tls-cert (MEMSYNC_TLS_CLIENT_CA)")
	fs.BoolVar(&c.Insecure, "insecure", env("MEMSYNC_INSECURE", "") == "true", "allow listening beyond loopback without authentication (MEMSYNC_INSECURE=true)")
	fs.StringVar(&logLevel, "log-level", env("MEMSYNC_LOG_LEVEL", "info"), "debug, info, warn or error (MEMSYNC_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if c.DefaultTTL, err = parseSeconds("default-ttl", defaultTTL); err != nil {
		return c, err
	}
	if c.MaxTTL, err = parseSeconds("max-ttl", maxTTL); err != nil {
		return c, err
	}
	for _, d := range []struct {
		name, text string
		into       *time.Duration
	}{{"heartbeat-ttl", heartbeatTTL, &c.HeartbeatTTL}, {"max-lock-ttl", maxLockTTL, &c.MaxLockTTL}, {"max-lock-wait", maxLockWait, &c.MaxLockWait},
		{"read-timeout", readTimeout, &c.ReadTimeout}, {"save-interval", saveInterval, &c.SaveInterval}} {
		if *d.into, err = parseSeconds(d.name, d.text); err != nil {
			return c, err
		}
	}
	if c.HeartbeatTTL <= 0 || c.MaxLockTTL <= 0 || c.ReadTimeout <= 0 {
		return c, fmt.Errorf("heartbeat-ttl, max-lock-ttl and read-timeout must be positive")
	}
	if c.MaxTTL <= 0 {
		return c, fmt.Errorf("max-ttl must be positive")
	}
	if c.DataFile != "" && c.RedisURL != "" {
		return c, fmt.Errorf("data-file keeps the embedded Redis's data, and redis-url names another Redis: pass one or the other (a Redis server keeps its own data: appendonly yes)")
	}
	if c.DefaultTTL > c.MaxTTL {
		return c, fmt.Errorf("default-ttl %s is above max-ttl %s", c.DefaultTTL, c.MaxTTL)
	}
	if c.MaxBodyBytes <= 0 {
		return c, fmt.Errorf("max-body must be positive")
	}
	if c.BatchInterval, err = parseMillis("batch-interval", batchInterval); err != nil {
		return c, err
	}
	if c.BatchInterval <= 0 || c.BatchSize <= 0 {
		return c, fmt.Errorf("batch-interval and batch-size must be positive")
	}
	if c.CacheSize < 0 {
		return c, fmt.Errorf("cache-size must not be negative")
	}
	if c.EventLogLen <= 0 {
		return c, fmt.Errorf("event-log-len must be positive")
	}
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return c, fmt.Errorf("log-level: %w", err)
	}
	if c.RateLimit < 0 || c.MaxWatchersPerToken < 0 {
		return c, fmt.Errorf("rate-limit and max-watchers-per-token must not be negative")
	}
	if c.TokensFile != "" {
		if c.Tokens, err = auth.Load(c.TokensFile); err != nil {
			return c, err
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, fmt.Errorf("tls-cert and tls-key go together: pass both or neither")
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		return c, fmt.Errorf("tls-client-ca needs tls-cert and tls-key: client certificates are asked for over TLS only")
	}
	if c.TLSCert != "" {
		if c.Certificate, err = loadCertificate(c.TLSCert, c.TLSKey, c.TLSClientCA); err != nil {
			return c, err
		}
	}
	if c.Tokens == nil && c.TLSClientCA == "" && !c.Insecure && !loopback(c.Addr) {
		return c, fmt.Errorf("refusing to listen on %s without authentication: pass --tokens (a token file) or --tls-client-ca, or --insecure to expose it anyway", c.Addr)
	}
	return c, nil
}

// log prints the configuration at start-up, with the Redis password masked.
func (c config) log(log *slog.Logger) {
	redis := "embedded (miniredis), nothing kept"
	if c.DataFile != "" {
		redis = "embedded (miniredis), kept in " + c.DataFile
	}
	if c.RedisURL != "" {
		redis = maskURL(c.RedisURL)
	}
	log.Info("configuration", "addr", c.Addr, "redis", redis, "save_interval", c.SaveInterval, "namespace", c.Namespace,
		"default_ttl", c.DefaultTTL, "max_ttl", c.MaxTTL, "max_body", c.MaxBodyBytes,
		"rules", c.RulesFile, "heartbeat_ttl", c.HeartbeatTTL, "max_lock_ttl", c.MaxLockTTL,
		"max_lock_wait", c.MaxLockWait, "batch_interval", c.BatchInterval, "batch_size", c.BatchSize, "cache_size", c.CacheSize,
		"event_log_len", c.EventLogLen, "tokens", c.TokensFile, "rate_limit", c.RateLimit,
		"max_watchers_per_token", c.MaxWatchersPerToken, "read_timeout", c.ReadTimeout, "tls_cert", c.TLSCert,
		"tls_client_ca", c.TLSClientCA, "insecure", c.Insecure)
	if c.Tokens == nil && c.TLSClientCA != "" {
		log.Warn("no --tokens: every request is served, as an admin, to any client with a certificate from " + c.TLSClientCA)
	} else if c.Tokens == nil {
		log.Warn("no --tokens: every request is served, as an admin, to anyone who can reach " + c.Addr)
	} else if c.Certificate == nil && !loopback(c.Addr) {
		log.Warn("bearer tokens cross the network in clear text: pass --tls-cert and --tls-key, or put a TLS-terminating proxy in front")
	}
	c.warnUnusedCertNames(log)
}

// warnUnusedCertNames says so when the token file names client
// certificates that no client can show: without --tls-client-ca the server
// asks for none.
func (c config) warnUnusedCertNames(log *slog.Logger) {
	if c.Tokens != nil && c.Tokens.Certs() > 0 && c.TLSClientCA == "" {
		log.Warn(fmt.Sprintf("the token file names %d client certificates (cert:<name>), which serve only with --tls-client-ca", c.Tokens.Certs()))
	}
}

// parseSeconds accepts whole seconds ("3600") or a Go duration ("1h").
func parseSeconds(name, v string) (time.Duration, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%s must not be negative", name)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s: %q is neither seconds nor a duration like 90s or 1h", name, v)
	}
	return d, nil
}

// parseMillis accepts whole milliseconds ("100") or a Go duration ("1s").
func parseMillis(name, v string) (time.Duration, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%s must not be negative", name)
		}
		return time.Duration(n) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s: %q is neither milliseconds nor a duration like 100ms or 1s", name, v)
	}
	return d, nil
}

func envInt(getenv func(string) string, name string, def int64) int64 {
	if n, err := strconv.ParseInt(getenv(name), 10, 64); err == nil {
		return n
	}
	return def
}

// loopback reports whether addr binds to a loopback interface only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// maskURL hides passwords in a (comma-separated list of) Redis URL(s).
func maskURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "(unparsable URL)"
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}
