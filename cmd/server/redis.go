package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/embedded"
)

// Redis client timeouts: short, so that requests fail fast with 503 while
// Redis is down, and recover by themselves when it is back.
const (
	redisDialTimeout = time.Second
	redisIOTimeout   = 2 * time.Second
	// embeddedIOTimeout is the embedded Redis's: see openRedis.
	embeddedIOTimeout = 30 * time.Second
	// A refused dial is retried twice, 50 ms apart (go-redis's default is
	// five times, 100 ms apart): a request fails with 503 in about 100 ms
	// instead of half a second per attempt.
	redisDialRetries    = 2
	redisDialRetryPause = 50 * time.Millisecond
	// RESP2: memsync uses nothing of RESP3, and go-redis checks every RESP3
	// reply for push notifications, which cost about 5% of a GET's CPU.
	redisProtocol = 2
	// No retries: go-redis sends a command again when its reply does not
	// come within the read timeout, but the command may have run (a big
	// batch's script takes that long on the embedded Redis), and memsync's
	// writes are scripts that must run once: run again, a write makes a
	// second version and event, a conditional write or a lock acquire is
	// refused for the change it made itself. A failed call is a 503 the
	// caller may retry knowing it failed (TestTimedOutWriteIsNotSentAgain).
	// Dials are retried (DialerRetries): nothing was sent.
	redisMaxRetries = -1
)

// embeddedData says where the embedded Redis keeps its data, and how often
// it saves it.
type embeddedData struct {
	DataFile     string
	SaveInterval time.Duration
}

// embeddedSaveTimeout bounds the embedded Redis's last save at shutdown.
const embeddedSaveTimeout = time.Minute

// openRedis connects to the Redis named by rawURL, or starts an embedded
// miniredis when it is empty (loaded from keep.DataFile, when it names
// one). It returns the client and a function that closes it (and stops the
// embedded server, after a last save).
//
//	redis://host:6379/0                         one server
//	rediss://…                                  one server over TLS
//	redis://h1:7000,redis://h2:7001             Redis Cluster (comma-separated)
//	redis://h1:26379?master_name=m&addr=h2:26379  Sentinel
func openRedis(rawURL string, keep embeddedData, log *slog.Logger) (redis.UniversalClient, func(), error) {
	if rawURL == "" {
		e, err := embedded.Start(embedded.Options{DataFile: keep.DataFile, SaveInterval: keep.SaveInterval, Log: log})
		if err != nil {
			return nil, nil, err
		}
		if keep.DataFile == "" {
			log.Warn("no REDIS_URL: using an embedded in-memory Redis; NOTHING IS PERSISTED (pass --data-file to keep it) and other instances cannot share it", "addr", e.Addr())
		} else {
			log.Info("no REDIS_URL: using an embedded Redis, kept in the data file; other instances cannot share it", "addr", e.Addr(), "data_file", keep.DataFile, "save_interval", keep.SaveInterval)
		}
		opts := tune(&redis.Options{Addr: e.Addr()})
		// In process, it cannot be unreachable, only slow: a batch of 1,000
		// creates takes it about 70 ms, and seconds under the race
		// detector on a loaded machine (gopher-lua); a timeout would answer
		// 503 for a batch it then applies.
		opts.ReadTimeout, opts.WriteTimeout = embeddedIOTimeout, embeddedIOTimeout
		c := redis.NewClient(opts)
		return c, func() {
			c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), embeddedSaveTimeout)
			defer cancel()
			if err := e.Close(ctx); err != nil {
				log.Error("embedded Redis: data NOT saved at shutdown: the data file holds the last periodic save", "data_file", keep.DataFile, "err", err)
			}
		}, nil
	}
	var c redis.UniversalClient
	switch {
	case strings.Contains(rawURL, ","):
		urls := strings.Split(rawURL, ",")
		opts, err := redis.ParseClusterURL(strings.TrimSpace(urls[0]))
		if err != nil {
			return nil, nil, fmt.Errorf("redis-url: %w", err)
		}
		for _, u := range urls[1:] {
			p, err := url.Parse(strings.TrimSpace(u))
			if err != nil || p.Host == "" {
				return nil, nil, fmt.Errorf("redis-url: bad cluster address %q", u)
			}
			opts.Addrs = append(opts.Addrs, p.Host)
		}
		opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = redisDialTimeout, redisIOTimeout, redisIOTimeout
		opts.DialerRetries, opts.DialerRetryTimeout = redisDialRetries, redisDialRetryPause
		opts.Protocol, opts.MaxRetries = redisProtocol, redisMaxRetries
		// The cluster client sends a command again after a timeout too, up
		// to MaxRedirects times, and redirects (MOVED, ASK) count against
		// the same number: none, then. A command a node refused without
		// running it (MOVED, ASK, TRYAGAIN: a failover, a resharding) is
		// sent again by followRedirects instead.
		opts.MaxRedirects = redisMaxRetries
		follow := newFollowRedirects(opts)
		cc := redis.NewClusterClient(opts)
		cc.AddHook(follow)
		return cc, func() { cc.Close(); follow.close() }, nil
	case strings.Contains(rawURL, "master_name="):
		opts, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, nil, fmt.Errorf("redis-url: %w", err)
		}
		opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = redisDialTimeout, redisIOTimeout, redisIOTimeout
		opts.DialerRetries, opts.DialerRetryTimeout = redisDialRetries, redisDialRetryPause
		opts.Protocol, opts.MaxRetries = redisProtocol, redisMaxRetries
		c = redis.NewFailoverClient(opts)
	default:
		opts, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, nil, fmt.Errorf("redis-url: %w", err)
		}
		c = redis.NewClient(tune(opts))
	}
	return c, func() { c.Close() }, nil
}

func tune(o *redis.Options) *redis.Options {
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout = redisDialTimeout, redisIOTimeout, redisIOTimeout
	o.MaxRetries = redisMaxRetries
	o.DialerRetries, o.DialerRetryTimeout = redisDialRetries, redisDialRetryPause
	o.Protocol = redisProtocol
	return o
}

// listpackValueAdvised is the hash-max-listpack-value under which memsync's
// keys stay compact: a key's hash holds its value's envelope, over Redis's
// default of 64 bytes for all but the smallest values.
const listpackValueAdvised = 1024

// adviseRedisSettings says, once at start, when Redis keeps memsync's keys
// as hash tables rather than listpacks: measured on the benchmark's keys,
// 440 bytes a key instead of 240, and about 10 % more Redis CPU per write
// of a batch (README: Redis settings). It changes nothing itself, and says
// nothing when it cannot tell (CONFIG disabled, as on many managed Redis
// services, or a Redis without the setting).
func adviseRedisSettings(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, redisIOTimeout)
	defer cancel()
	cfg, err := rdb.ConfigGet(ctx, "hash-max-listpack-value").Result()
	if err != nil {
		return
	}
	v, ok := cfg["hash-max-listpack-value"]
	n, err := strconv.Atoi(v)
	if !ok || err != nil || n >= listpackValueAdvised {
		return
	}
	log.Info(fmt.Sprintf("Redis stores hashes with a value over %d bytes as hash tables, which is most of memsync's keys: "+
		"CONFIG SET hash-max-listpack-value %d (or set it in redis.conf) keeps them about 45 %% smaller, and batches of writes faster",
		n, listpackValueAdvised), "hash_max_listpack_value", n)
}
