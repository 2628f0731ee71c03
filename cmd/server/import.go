package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/memsync/memsync/internal/embedded"
)

// importData is `memsync import-data`: it copies the embedded Redis's data
// file (make run's memsync.data) into a Redis server, the way from trying
// memsync to running it on Redis. The server must hold no memsync keys,
// and no memsync may run on the data file meanwhile.
func importData(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("memsync import-data", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dataFile := fs.String("data-file", getenv("MEMSYNC_DATA_FILE"), "the data file to copy (MEMSYNC_DATA_FILE)")
	redisURL := fs.String("redis-url", getenv("REDIS_URL"), "the Redis to copy it into, as for serving: one server, Sentinel or Cluster (REDIS_URL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dataFile == "" || *redisURL == "" || fs.NArg() > 0 {
		return errors.New("usage: memsync import-data --data-file FILE --redis-url URL")
	}
	log := slog.New(slog.NewTextHandler(stdout, nil))
	rdb, closeRedis, err := openRedis(*redisURL, embeddedData{}, log)
	if err != nil {
		return err
	}
	defer closeRedis()
	n, err := embedded.Import(ctx, *dataFile, rdb)
	if err != nil {
		return fmt.Errorf("import-data: %w", err)
	}
	log.Info("data file imported: start memsync with this --redis-url", "data_file", *dataFile, "redis", maskURL(*redisURL), "redis_keys", n)
	return nil
}
