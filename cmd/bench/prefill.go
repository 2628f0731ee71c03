package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// prefill writes every key the arms read, so that every GET hits: the naive
// keys directly in Redis, memsync's through its API (when it runs), so they
// are stored exactly as memsync stores them.
func prefill(ctx context.Context, redisAddr, memsyncURL string) error {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	pipe := rdb.Pipeline()
	get := armByName("naive-get")
	for i := range keySpace {
		pipe.Set(ctx, naivePrefix+strings.TrimPrefix(get.path(i), "/kv/"), value, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("prefill the naive keys: %w", err)
	}

	if memsyncURL == "" {
		return nil
	}
	c, err := dial(strings.TrimPrefix(memsyncURL, "http://"))
	if err != nil {
		return err
	}
	defer c.close()
	put := armByName("memsync-put")
	for i := range keySpace {
		if err := c.expect(200, "PUT", put.path(i), nil, put.body); err != nil {
			return fmt.Errorf("prefill memsync: %w", err)
		}
	}
	// wrk counts only the statuses of the batch arm's responses: check once
	// here that each of its bodies' ops succeeds.
	batch := armByName("memsync-batch100")
	for i := range batch.cycle() {
		if err := c.expect(200, "POST", batch.path(i), nil, batch.bodyFor(i)); err != nil {
			return fmt.Errorf("prefill memsync: %w", err)
		}
		if err := batch.check(c.body.Bytes()); err != nil {
			return fmt.Errorf("prefill memsync: %w", err)
		}
	}
	return nil
}
