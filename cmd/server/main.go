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
	"syscall"
	"time"

	"github.com/memsync/memsync/api"
	memhttp "github.com/memsync/memsync/internal/http"
	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/store"
)

func main() {
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

// run starts the service and blocks until ctx is cancelled, then shuts down
// gracefully. Flags come from args, with environment fallbacks from getenv;
// logs go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := parseConfig(args, getenv, stdout)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	cfg.log(log)

	rdb, closeRedis, err := openRedis(cfg.RedisURL, log)
	if err != nil {
		return err
	}
	defer closeRedis()

	rules, err := loadRules(cfg.RulesFile)
	if err != nil {
		return err
	}
	st, err := store.New(rdb, store.Config{DefaultTTL: cfg.DefaultTTL, MaxTTL: cfg.MaxTTL, Rules: rules})
	if err != nil {
		return err
	}
	defer st.Close()
	locker := lock.New(rdb, lock.Options{MaxTTL: cfg.MaxLockTTL, MaxWait: cfg.MaxLockWait})
	defer locker.Close()
	handler, err := memhttp.NewServer(memhttp.Config{
		Namespace: cfg.Namespace, MaxBodyBytes: cfg.MaxBodyBytes, Spec: api.Spec,
		HeartbeatTTL: cfg.HeartbeatTTL,
	}, log, st, locker)
	if err != nil {
		return err
	}

	// Every instance sweeps; the sweep script lets exactly one announce
	// each expiry.
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		st.RunSweeper(sweepCtx, store.DefaultSweepInterval, func(err error) {
			log.Warn("expiry sweep failed; retrying", "err", err)
		})
	}()
	defer func() { stopSweep(); <-sweepDone }()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("memsync listening", "addr", ln.Addr().String())

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
