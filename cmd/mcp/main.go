// Command mcp serves a memsync server to an AI agent as Model Context
// Protocol tools over stdin and stdout: an MCP host (Claude Code, say)
// starts it as a local server, and the agent shares keys, locks, queues and
// counters with every other worker of the fleet.
//
//	memsync-mcp --url http://memsync:8080 --worker-id agent-7
//
// Every flag has an environment variable (MEMSYNC_URL, MEMSYNC_TOKEN,
// MEMSYNC_WORKER_ID, MEMSYNC_NAMESPACE, MEMSYNC_HEARTBEAT). While the
// session lasts, the agent beats as a worker, so that others see it among
// the active workers; locks it took are released when the session ends.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/mcpserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "memsync-mcp:", err)
		os.Exit(1)
	}
}

// run serves one MCP session on in and out until it ends (the host closes
// in) or ctx is done.
func run(ctx context.Context, args []string, in io.ReadCloser, out io.WriteCloser, stderr io.Writer, getenv func(string) string) error {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("memsync-mcp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", env("MEMSYNC_URL", "http://localhost:8080"), "the memsync server")
	token := fs.String("token", env("MEMSYNC_TOKEN", ""), "the bearer token, when the server takes tokens")
	worker := fs.String("worker-id", env("MEMSYNC_WORKER_ID", fmt.Sprintf("mcp-%s-%d", host, os.Getpid())), "the agent's worker id (X-Worker-Id)")
	ns := fs.String("namespace", env("MEMSYNC_NAMESPACE", "task-sentinel"), "the namespace")
	beat, err := time.ParseDuration(env("MEMSYNC_HEARTBEAT", "10s"))
	if err != nil {
		return fmt.Errorf("MEMSYNC_HEARTBEAT: %w", err)
	}
	fs.DurationVar(&beat, "heartbeat", beat, "how often the agent beats as a worker while the session lasts; 0 never")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := []client.Option{client.WithWorkerID(*worker), client.WithNamespace(*ns), client.WithRetries(2)}
	if *token != "" {
		opts = append(opts, client.WithToken(*token))
	}
	c, err := client.New(*url, opts...)
	if err != nil {
		return err
	}
	srv, release := mcpserver.New(c, *ns)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		release(ctx)
	}()
	if beat > 0 {
		// The heartbeat's TTL is three beats: one lost beat does not make
		// the agent look gone.
		stopBeat := c.StartHeartbeat(ctx, beat, client.HeartbeatTTL(3*beat))
		defer stopBeat()
	}
	err = srv.Run(ctx, &mcp.IOTransport{Reader: in, Writer: out})
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		return nil // the host ended the session, or a signal did
	}
	return err
}
