package lock

import "github.com/redis/go-redis/v9"

// The Lua scripts below are every read-modify-write the package does. Each
// names in KEYS every key it touches, and all of a lock's keys share the hash
// slot of the lock name's subtree (keys.Aux), so each script is one atomic
// step on Redis Cluster too. The per-namespace index lives in another slot and
// is updated by the Go side after the script.
//
// Numbers that Redis stores are formatted with string.format('%.0f', n):
// Lua 5.1 numbers are doubles, and both tostring and Redis's own conversion of
// a number argument may print a 16-digit integer in exponent form. Doubles
// hold integers exactly up to 2^53 (about 9.0e15), far above the microsecond
// clock (about 1.8e15) the fence follows.
//
// Times come from Redis TIME, so every instance stamps grants with the same
// clock. Redis 7 replicates scripts by their effects, so the non-deterministic
// TIME is allowed before writes; miniredis supports it as well.

// standLua defines stand(), which takes an acquire's place in a line of
// waiters, or keeps it, and renews its lease; a no-op for an acquire that
// does not wait. Both acquire scripts use it, with KEYS[3] the line, KEYS[4]
// the leases, ARGV[1] the token, ARGV[3] the owner, and the locals lease (ms),
// now (ms) and now_us.
const standLua = `
local function stand()
  if lease == 0 then return end
  if not redis.call('ZSCORE', KEYS[3], ARGV[1]) then
    -- After everyone in line already, even within one tick of the clock:
    -- the line keeps the order Redis ran the arrivals in.
    local score = now_us
    local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')[2]
    if last and tonumber(last) >= score then score = tonumber(last) + 1 end
    redis.call('ZADD', KEYS[3], string.format('%.0f', score), ARGV[1])
  end
  redis.call('HSET', KEYS[4], ARGV[1], string.format('%.0f', now + lease) .. '|' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[3], lease)
  redis.call('PEXPIRE', KEYS[4], lease)
end
`

// fenceKeepMs is fenceKeep in milliseconds, as acquireScript takes it.
const fenceKeepMs = "604800000"

// acquireScript takes a free lock: SET NX PX semantics on a hash that holds
// the token and the holder's metadata in one key, so the token and the
// metadata are created, expire and vanish together.
//
// The fencing token is max(counter+1, now_us), where counter is the last fence
// given for this name and now_us is the Redis clock in microseconds. The counter alone makes fences strictly increase while it
// survives (and with AOF it survives a restart). The clock term covers losing
// it (a restart without persistence, a failover to a lagging replica, a DEL by
// hand): one script run takes more than a microsecond, so in normal use the
// counter never runs ahead of the clock, and a re-seeded fence is above every
// earlier one as long as the Redis clock has not been stepped back. The first
// fence of a name is therefore a timestamp, not 1. So the counter need not be
// kept forever, which would keep a key for every lock name ever used: it
// expires fenceKeep after the end of the lease it was set for, and guards
// until then against the clock being stepped back by up to that much.
//
// Waiters stand in line, one line per lock for every instance: an acquire
// that will wait (lease > 0) takes a place the first time it finds the lock
// held (scored by the Redis clock, and after every waiter already in line:
// later tries keep it), and renews its lease on every try. A free lock with waiters in line belongs to the first of
// them whose lease has not run out; the others, and acquires that do not
// wait, find it held for that waiter. Waiters whose lease ran out (their
// instance died, or stopped renewing) are dropped from the head of the line
// when met. A grant leaves the line.
//
// An acquire with an idempotency key that the held lock's grant was made
// under gets that grant again, token included: the request that took the
// lock but never heard so (a timeout) can send it again.
//
// KEYS[1] lock hash (fields token, owner, fence, acquired_at, expires_at,
// and idem for a grant made under an idempotency key)
// KEYS[2] fence counter (string, kept fenceKeep past the lease it was set for)
// KEYS[3] line of waiters (sorted set: member token, score arrival in µs)
// KEYS[4] waiters' leases (hash: token → "<lease end ms>|<owner>")
// ARGV[1] token, ARGV[2] TTL in ms (integer >= 1), ARGV[3] owner,
// ARGV[4] a waiter's lease in ms, "0" for an acquire that does not wait,
// ARGV[5] "<idempotency key> <digest of owner and TTL>", "" for none
//
// Returns {1, fence, acquired_at_ms, expires_at_ms} when granted (fence as a
// decimal string), or {0, holder_owner, holder_expires_at_ms, now_ms} when the
// lock is held (holder_expires_at_ms is 0 for a key without TTL, which these
// scripts never create), or free but kept for the first waiter in line: then
// {0, that waiter's owner, the end of its lease, now_ms, that waiter's token};
// {1, fence, acquired_at_ms, expires_at_ms, token} when the lock is held by
// the grant made under ARGV[5]; {-1} when it is held by a grant made under
// the same idempotency key for another owner or TTL.
var acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
local lease = tonumber(ARGV[4])
` + standLua + `
-- Every lock hash has an owner field ("" for none): one read says whether
-- the lock is held, and by whom until when.
local idem = ARGV[5]
local h = redis.call('HMGET', KEYS[1], 'owner', 'expires_at', 'idem')
if h[1] then
  if idem ~= '' and h[3] then
    if h[3] == idem then
      local g = redis.call('HMGET', KEYS[1], 'fence', 'acquired_at', 'token')
      return {1, g[1], tonumber(g[2]), tonumber(h[2]), g[3]}
    end
    if string.match(h[3], '^%S+') == string.match(idem, '^%S+') then return {-1} end
  end
  stand()
  local exp = tonumber(h[2])
  if not exp then
    local pttl = redis.call('PTTL', KEYS[1])
    if pttl >= 0 then exp = now + pttl else exp = 0 end
  end
  return {0, h[1], exp, now}
end
while true do
  local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not head or head == ARGV[1] then break end
  local ends, owner = string.match(redis.call('HGET', KEYS[4], head) or '', '^(%d+)|(.*)$')
  if ends and tonumber(ends) >= now then
    stand()
    return {0, owner, tonumber(ends), now, head}
  end
  redis.call('ZREM', KEYS[3], head)
  redis.call('HDEL', KEYS[4], head)
end
local fence = (tonumber(redis.call('GET', KEYS[2])) or 0) + 1
if fence < now_us then fence = now_us end
fence = string.format('%.0f', fence)
local exp = now + tonumber(ARGV[2])
redis.call('SET', KEYS[2], fence, 'PX', string.format('%.0f', tonumber(ARGV[2]) + ` + fenceKeepMs + `))
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'owner', ARGV[3], 'fence', fence,
  'acquired_at', string.format('%.0f', now), 'expires_at', string.format('%.0f', exp))
if idem ~= '' then redis.call('HSET', KEYS[1], 'idem', idem) end
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', exp))
if lease > 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
end
return {1, fence, now, exp}
`)

// renewScript renews the leases of waiters still in a lock's line, for the
// instance they wait on (waiters that only sleep do not try the lock).
//
// KEYS[1] line of waiters; KEYS[2] waiters' leases (see acquireScript)
// ARGV[1] lease in ms; then pairs of ARGV: token, owner
//
// Returns how many waiters were still in line.
var renewScript = redis.NewScript(`
local t = redis.call('TIME')
local ends = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1]))
local n = 0
for i = 2, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('HSET', KEYS[2], ARGV[i], ends .. '|' .. ARGV[i + 1])
    n = n + 1
  end
end
if n > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return n
`)

// refreshScript sets a new expiry on a lock the token still holds; the fence
// and acquisition time stay.
//
// KEYS[1] lock hash
// ARGV[1] token, ARGV[2] TTL in ms from now (integer >= 1)
//
// Returns {1, owner, fence, acquired_at_ms, expires_at_ms}, or {0} when the
// token does not hold the lock (expired, released or taken over); then
// nothing changes.
var refreshScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return {0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = string.format('%.0f', now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'expires_at', exp)
redis.call('PEXPIREAT', KEYS[1], exp)
local h = redis.call('HMGET', KEYS[1], 'owner', 'fence', 'acquired_at')
return {1, h[1], h[2], h[3], exp}
`)

// releaseScript deletes a lock the token holds and, when waiters stand in
// its line, announces it on the namespace's release channel, so that they
// wake on every instance. Every waiter takes its place in line on its
// first try (acquireScript) and keeps it while it waits, so a lock without
// a line has nobody to wake: most releases, and each announcement costs
// Redis a message to every instance and every instance a read. A waiter
// whose place lapsed (its renewals fell behind by a second or more) still
// tries again after its RetryInterval.
//
// KEYS[1] lock hash; KEYS[2] line of waiters (see acquireScript)
// ARGV[1] token, ARGV[2] release channel, ARGV[3] lock name (the message)
//
// Returns {1}, or {0} when the token does not hold the lock; then nothing
// changes.
var releaseScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return {0}
end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return {1}
`)

// forceReleaseScript deletes a lock whoever holds it (an admin's override)
// and announces it like releaseScript.
//
// KEYS[1] lock hash
// ARGV[1] release channel, ARGV[2] lock name (the message)
//
// Returns {1, token} (the caller derives the grant's index member from it),
// or {0} when the lock is not held.
var forceReleaseScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end
local token = redis.call('HGET', KEYS[1], 'token')
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return {1, token or ''}
`)

// listScript reads the namespace's lock index by the Redis clock: the members
// whose grant has not expired by score. Members are "name#id", one per grant
// (see member in lock.go); the caller
// still checks each lock, because a released or refreshed-then-force-released
// grant may leave a member behind until its score passes.
//
// KEYS[1] index sorted set (member "name#id", score expires_at_ms)
//
// Returns the members with score >= now_ms.
var listScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', now), '+inf')
`)

// trimIndexScript removes the index entries whose grants expired, by the
// Redis clock (the clock leases run on).
//
// KEYS[1] index sorted set (member "name#id", score expires_at_ms)
//
// Returns the number of entries removed.
var trimIndexScript = redis.NewScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", "(" .. string.format("%.0f", now))
`)
