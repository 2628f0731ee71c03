// Command server runs memsync: the HTTP/JSON API over Redis, or over an
// embedded in-memory Redis when none is configured.
//
// main only wires the process to run, which the end-to-end tests call too.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/memsync/memsync/internal/app"
	"github.com/memsync/memsync/internal/store"
)

// defaultGCPercent is the garbage collector's target when GOGC is not set:
// twice the Go default. A write allocates a few short-lived kilobytes
// (request, envelope, script arguments and reply) and the live heap is
// small, so collecting half as often cut the server's CPU per key written
// in a batch by about 15% (make bench), for a larger but still bounded heap.
const defaultGCPercent = 200

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "memsync:", err)
		os.Exit(1)
	}
}

// shutdownTimeout bounds the graceful shutdown: requests in flight get this
// long to finish.
const shutdownTimeout = 10 * time.Second

// flushTimeout bounds the flush of queued async writes at shutdown,
// retries included (Redis may be failing over).
const flushTimeout = 15 * time.Second

// run starts the service and blocks until ctx is cancelled, then shuts down
// gracefully; or, with "import-data" first, copies a data file into a
// Redis (importData). Flags come from args, with environment fallbacks from getenv;
// logs go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "import-data" {
		return importData(ctx, args[1:], getenv, stdout)
	}
	cfg, err := parseConfig(args, getenv, stdout)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	cfg.log(log)

	rdb, closeRedis, err := openRedis(cfg.RedisURL, embeddedData{cfg.DataFile, cfg.SaveInterval}, log)
	if err != nil {
		return err
	}
	defer closeRedis()
	if cfg.RedisURL != "" {
		adviseRedisSettings(ctx, rdb, log)
	}

	rules, err := loadRules(cfg.RulesFile)
	if err != nil {
		return err
	}
	a, err := app.New(rdb, app.Config{
		Log: log, Namespace: cfg.Namespace, DefaultTTL: cfg.DefaultTTL, MaxTTL: cfg.MaxTTL, Rules: rules,
		MaxBodyBytes: cfg.MaxBodyBytes, HeartbeatTTL: cfg.HeartbeatTTL,
		MaxLockTTL: cfg.MaxLockTTL, MaxLockWait: cfg.MaxLockWait, CacheSize: cfg.CacheSize,
		BatchInterval: cfg.BatchInterval, BatchSize: cfg.BatchSize, EventLogLen: cfg.EventLogLen,
		Tokens: cfg.Tokens, RateLimit: cfg.RateLimit, MaxWatchersPerToken: cfg.MaxWatchersPerToken,
	})
	if err != nil {
		return err
	}
	a.Start()
	// This runs after Shutdown, once no request can queue more, and before
	// Redis closes: everything still queued is flushed, so SIGTERM loses no
	// accepted write unless Redis stays away for all of flushTimeout.
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
		defer cancel()
		n, err := a.Close(fctx)
		if err != nil {
			log.Error("queued writes were NOT flushed before exit", "flushed", n, "err", err)
			return
		}
		log.Info("flushed queued writes", "flushed", n)
	}()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           a.Handler,
		ReadHeaderTimeout: 5 * time.Second,
		// A client may not hold a connection by sending a request slowly.
		// net/http lifts the deadline once the body is read, so that watch
		// streams and waiting lock requests outlive it (TestReadTimeout).
		ReadTimeout: cfg.ReadTimeout,
		IdleTimeout: 2 * time.Minute,
		// Connection-level trouble (a failed TLS handshake, say) goes to
		// the log with everything else rather than to stderr.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(a.StopStreams)
	if cfg.Tokens != nil || cfg.Certificate != nil {
		go reloadOnHangup(ctx, cfg, log)
	}
	serveErr := make(chan error, 1)
	scheme := "http"
	if cfg.Certificate != nil {
		scheme = "https"
		srv.TLSConfig = cfg.Certificate.config()
		go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { serveErr <- srv.Serve(ln) }()
	}
	log.Info("memsync listening", "addr", ln.Addr().String(), "url", scheme+"://"+ln.Addr().String())

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// reloadOnHangup reads the token file and the TLS certificate again at
// every SIGHUP until ctx ends: tokens are added, revoked or changed, and a
// renewed certificate served, without a restart. A file that cannot be used
// leaves what it would replace as it was, and says why in the log.
func reloadOnHangup(ctx context.Context, cfg config, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if cfg.Tokens != nil {
			if err := cfg.Tokens.Reload(cfg.TokensFile); err != nil {
				log.Error("tokens NOT reloaded: the previous ones stay in force", "err", err)
			} else {
				log.Info("tokens reloaded", "file", cfg.TokensFile, "tokens", cfg.Tokens.Len(), "certificate_names", cfg.Tokens.Certs())
				cfg.warnUnusedCertNames(log)
			}
		}
		if cfg.Certificate != nil {
			if err := cfg.Certificate.reload(); err != nil {
				log.Error("TLS certificate NOT reloaded: the previous one stays in use", "err", err)
			} else {
				log.Info("TLS certificate reloaded", "file", cfg.TLSCert, "client_ca", cfg.TLSClientCA)
			}
		}
	}
}

func loadRules(path string) (*store.Rules, error) {
	var extra []store.Rule
	if path != "" {
		var err error
		if extra, err = store.LoadRules(path); err != nil {
			return nil, err
		}
	}
	return store.NewRules(extra)
}
