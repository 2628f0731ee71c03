package main

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/rediserr"
)

// followRedirects sends again the commands a Cluster node refused without
// running them, so that sending again cannot apply a write twice, as it
// could after a timeout (redisMaxRetries):
//
//   - MOVED: the slot has another master now (a failover, the end of a
//     slot's migration). The refusal makes the client reload its slot map
//     in the background, so each try waits a little longer for that
//     (rediserr.MovedPauses); then the MOVED stands (a 503).
//   - ASK: the slot is migrating, and the command's keys have left for the
//     importing node (or none of them exists yet). The command goes there
//     at once, after ASKING, on a client of that node's own: the slot map
//     names the old master until the migration ends. A script that node has
//     not cached is loaded there (the source is known from the SCRIPT LOAD
//     or EVAL that went through this client before), as a node new to the
//     cluster has none.
//   - TRYAGAIN: a command of several keys (memsync's scripts take a key and
//     its subtree's index, a lock and its fencing counter) in a slot whose
//     keys are split between the two nodes for now, or that would create a
//     key there. It waits as MOVED does, for the migration to end.
//
// A pipeline's refused commands are sent again together, after the rest,
// in their order: memsync pipelines only commands that do not depend on
// one another's order across hash slots. Within a slot, a pipeline whose
// refusals mix ASK with MOVED or TRYAGAIN in one round waits and sends them
// all again through the slot map, rather than send the ASK ones ahead of
// a command they followed. memsync runs no MULTI through the cluster client
// (an atomic batch uses a node's WATCH, which the store tries again itself
// on MOVED; a slot in mid-migration is a 503 for it).
type followRedirects struct {
	mu       sync.Mutex
	template *redis.Options           // a node client's options, as the cluster client made them
	nodes    map[string]*redis.Client // clients of the nodes met through ASK, by address

	scripts sync.Map // SHA1 (hex) → Lua source, of every script loaded or EVALed through the client
}

// newFollowRedirects returns the hook for a cluster client made with opts,
// which it changes so as to learn the options of the cluster's node
// clients (for the clients it makes itself, for ASK).
func newFollowRedirects(opts *redis.ClusterOptions) *followRedirects {
	f := &followRedirects{nodes: map[string]*redis.Client{}}
	newClient := opts.NewClient
	if newClient == nil {
		newClient = redis.NewClient
	}
	opts.NewClient = func(o *redis.Options) *redis.Client {
		f.mu.Lock()
		if f.template == nil {
			t := *o
			f.template = &t
		}
		f.mu.Unlock()
		return newClient(o)
	}
	return f
}

// close closes the clients of the nodes met through ASK.
func (f *followRedirects) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, c := range f.nodes {
		_ = c.Close()
		delete(f.nodes, addr)
	}
}

// node returns the client of the node at addr, made like the cluster's.
func (f *followRedirects) node(addr string) *redis.Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.nodes[addr]; ok {
		return c
	}
	o := redis.Options{}
	if f.template != nil {
		o = *f.template
	}
	o.Addr = addr
	c := redis.NewClient(&o)
	f.nodes[addr] = c
	return c
}

// noteScript remembers the source of a script that cmd loads or runs by
// source.
func (f *followRedirects) noteScript(cmd redis.Cmder) {
	args := cmd.Args()
	var src string
	switch name := cmd.Name(); {
	case (name == "eval" || name == "eval_ro") && len(args) > 1:
		src, _ = args[1].(string)
	case name == "script" && len(args) > 2:
		if sub, _ := args[1].(string); strings.EqualFold(sub, "load") {
			src, _ = args[2].(string)
		}
	}
	if src == "" {
		return
	}
	sum := sha1.Sum([]byte(src))
	f.scripts.LoadOrStore(hex.EncodeToString(sum[:]), src)
}

// ask sends cmds, in order, to the node at addr, each after ASKING. A
// script the node has not cached is loaded there, and its command sent
// again.
func (f *followRedirects) ask(ctx context.Context, addr string, cmds []redis.Cmder) {
	node := f.node(addr)
	send := func(cmds []redis.Cmder) {
		pipe := node.Pipeline()
		for _, cmd := range cmds {
			cmd.SetErr(nil)
			_ = pipe.Process(ctx, redis.NewStatusCmd(ctx, "asking"))
			_ = pipe.Process(ctx, cmd)
		}
		_, _ = pipe.Exec(ctx) // each command's own error is read by its caller
	}
	send(cmds)
	var again []redis.Cmder
	loaded := map[string]bool{}
	for _, cmd := range cmds {
		err := cmd.Err()
		if err == nil || !strings.HasPrefix(err.Error(), "NOSCRIPT") || cmd.Name() != "evalsha" {
			continue
		}
		args := cmd.Args()
		if len(args) < 2 {
			continue
		}
		sha, _ := args[1].(string)
		src, ok := f.scripts.Load(sha)
		if !ok {
			continue
		}
		if !loaded[sha] {
			if node.ScriptLoad(ctx, src.(string)).Err() != nil {
				continue
			}
			loaded[sha] = true
		}
		again = append(again, cmd)
	}
	if len(again) > 0 {
		send(again)
	}
}

func (f *followRedirects) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *followRedirects) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		f.noteScript(cmd)
		err := next(ctx, cmd)
		for paused, asked := 0, 0; ; {
			kind, addr := rediserr.Refused(err)
			switch {
			case kind == rediserr.NotRefused:
				return err
			case kind == rediserr.RefusedAsk && asked < len(rediserr.MovedPauses):
				asked++
				f.ask(ctx, addr, []redis.Cmder{cmd})
				err = cmd.Err()
			case paused < len(rediserr.MovedPauses) && sleepCtx(ctx, rediserr.MovedPauses[paused]):
				paused++
				cmd.SetErr(nil)
				err = next(ctx, cmd)
			default:
				return err
			}
		}
	}
}

func (f *followRedirects) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			f.noteScript(cmd)
		}
		err := next(ctx, cmds)
		for paused, asked := 0, 0; ; {
			var waiting []redis.Cmder         // refused with MOVED or TRYAGAIN
			var asks map[string][]redis.Cmder // refused with ASK, by the node to ask
			asking := 0
			for _, cmd := range cmds {
				switch kind, addr := rediserr.Refused(cmd.Err()); kind {
				case rediserr.RefusedAsk:
					if asks == nil {
						asks = map[string][]redis.Cmder{}
					}
					asks[addr] = append(asks[addr], cmd)
					asking++
				case rediserr.RefusedMoved, rediserr.RefusedTryAgain:
					waiting = append(waiting, cmd)
				}
			}
			switch {
			case asking == 0 && len(waiting) == 0:
				return err
			case len(waiting) == 0 && asked < len(rediserr.MovedPauses):
				asked++
				for addr, cmds := range asks {
					f.ask(ctx, addr, cmds)
				}
			case paused < len(rediserr.MovedPauses) && sleepCtx(ctx, rediserr.MovedPauses[paused]):
				// Mixed with ASK, the refused commands all go through the
				// slot map again, in order (see followRedirects).
				paused++
				again := make([]redis.Cmder, 0, asking+len(waiting))
				for _, cmd := range cmds {
					if kind, _ := rediserr.Refused(cmd.Err()); kind != rediserr.NotRefused {
						cmd.SetErr(nil)
						again = append(again, cmd)
					}
				}
				_ = next(ctx, again)
			default:
				return err
			}
			err = firstErr(cmds) // a pipeline's error is its first failed command's, as go-redis has it
		}
	}
}

// firstErr is a pipeline's error as go-redis reports it: its first failed
// command's.
func firstErr(cmds []redis.Cmder) error {
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

// sleepCtx waits d, and reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
