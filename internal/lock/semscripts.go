package lock

import "github.com/redis/go-redis/v9"

// The semaphore's scripts. Like the lock's, each names every key it touches
// in KEYS, all in the semaphore name's subtree hash slot, and stamps times
// with Redis TIME. A permit is live while its expiry (score) is at or after
// the Redis clock's now, as a key with PEXPIREAT is.

// semDropExpiredLua removes the permits whose lease ended (score < now) and
// their idempotency entries: a permit's field in KEYS[2] is
// "<acquired_at>|<idem>|<owner>", <idem> being "<idempotency key>/<digest>"
// or empty, and "i:<idempotency key>" maps the key to the permit's token.
const semDropExpiredLua = `
local function idemField(v)
  local key = string.match(v or '', '^%d+|([^|/]+)/')
  if key then return 'i:' .. key end
end
for _, tok in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', now))) do
  local f = idemField(redis.call('HGET', KEYS[2], tok))
  if f then redis.call('HDEL', KEYS[2], f) end
  redis.call('HDEL', KEYS[2], tok)
  redis.call('ZREM', KEYS[1], tok)
end
`

// semKeepLua makes KEYS[1] and KEYS[2] expire with their last permit, or
// deletes both when none is left.
const semKeepLua = `
local function keep()
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
  if not last then
    redis.call('DEL', KEYS[1], KEYS[2])
    return
  end
  redis.call('PEXPIREAT', KEYS[1], last)
  redis.call('PEXPIREAT', KEYS[2], last)
end
`

// semAcquireScript grants a permit of a counting semaphore: at most limit
// live permits at once. The semaphore's limit is set by the acquire that
// finds it without permits and holds while any permit is live; an acquire
// that asks another limit meanwhile is refused.
//
// Waiters stand in one line per semaphore, as for a lock (acquireScript):
// a free permit goes to the live waiters at the head of the line first. An
// acquire is granted when fewer permits are live than the limit and fewer
// live waiters stand ahead of it in line than permits are free; an acquire
// that does not wait stands behind all of them. Lapsed places met on the
// way are dropped.
//
// KEYS[1] permits (sorted set: member token, score expires_at ms)
// KEYS[2] permits' details (hash: token → "<acquired_at ms>|<idem>|<owner>",
// "i:<idempotency key>" → token, "limit" → the limit)
// KEYS[3] line of waiters, KEYS[4] waiters' leases (as for a lock)
// ARGV[1] token, ARGV[2] TTL in ms (integer >= 1), ARGV[3] owner, ARGV[4] a
// waiter's lease in ms, "0" for an acquire that does not wait, ARGV[5]
// "<idempotency key>/<digest of owner, TTL and limit>" or "", ARGV[6] limit
//
// Returns {1, acquired_at_ms, expires_at_ms} when granted;
// {1, acquired_at_ms, expires_at_ms, token} for the live permit granted
// under ARGV[5]'s key and digest; {-1} when that key's live permit was
// granted for another owner, TTL or limit; {-2, limit} when the semaphore's
// limit differs from ARGV[6]; {0, live permits, earliest expires_at_ms,
// now_ms} when no permit is free for this acquire.
var semAcquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
local lease = tonumber(ARGV[4])
local limit = tonumber(ARGV[6])
local idem = ARGV[5]
` + standLua + semDropExpiredLua + semKeepLua + `
if idem ~= '' then
  local prev = redis.call('HGET', KEYS[2], 'i:' .. string.match(idem, '^[^/]+'))
  if prev and redis.call('ZSCORE', KEYS[1], prev) then
    local acq, was = string.match(redis.call('HGET', KEYS[2], prev) or '', '^(%d+)|([^|]*)')
    if was ~= idem then return {-1} end
    return {1, tonumber(acq), tonumber(redis.call('ZSCORE', KEYS[1], prev)), prev}
  end
end
local live = redis.call('ZCARD', KEYS[1])
if live > 0 then
  local cur = tonumber(redis.call('HGET', KEYS[2], 'limit'))
  if cur and cur ~= limit then return {-2, cur} end
end
local free = limit - live
local ahead = 0
local i = 0
while ahead < free do
  local tok = redis.call('ZRANGE', KEYS[3], i, i)[1]
  if not tok or tok == ARGV[1] then break end
  local ends = string.match(redis.call('HGET', KEYS[4], tok) or '', '^(%d+)|')
  if ends and tonumber(ends) >= now then
    ahead = ahead + 1
    i = i + 1
  else
    redis.call('ZREM', KEYS[3], tok)
    redis.call('HDEL', KEYS[4], tok)
  end
end
if ahead >= free then
  stand()
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
  return {0, live, tonumber(first or 0), now}
end
local exp = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%.0f', exp), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], string.format('%.0f', now) .. '|' .. idem .. '|' .. ARGV[3], 'limit', ARGV[6])
if idem ~= '' then redis.call('HSET', KEYS[2], 'i:' .. string.match(idem, '^[^/]+'), ARGV[1]) end
keep()
if lease > 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
end
return {1, now, exp}
`)

// semRefreshScript sets a new expiry on a live permit.
//
// KEYS[1] permits, KEYS[2] permits' details (see semAcquireScript)
// ARGV[1] token, ARGV[2] TTL in ms from now (integer >= 1)
//
// Returns {1, owner, acquired_at_ms, expires_at_ms, limit}, or {0} when the
// token holds no live permit; then nothing changes.
var semRefreshScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not score or score < now then return {0} end
` + semKeepLua + `
local exp = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%.0f', exp), ARGV[1])
keep()
local acq, owner = string.match(redis.call('HGET', KEYS[2], ARGV[1]) or '', '^(%d+)|[^|]*|(.*)$')
return {1, owner or '', tonumber(acq or 0), exp, tonumber(redis.call('HGET', KEYS[2], 'limit') or 0)}
`)

// semReleaseScript gives back the permit of a token and, when waiters stand
// in line, announces it on the namespace's release channel (the lock's: its
// subscribers wake the lock's and the semaphore's waiters of the name).
//
// KEYS[1] permits, KEYS[2] permits' details, KEYS[3] line (see
// semAcquireScript)
// ARGV[1] token, ARGV[2] release channel, ARGV[3] the semaphore's name
//
// Returns 1, or 0 when the token holds no live permit; then nothing changes.
var semReleaseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not score or score < now then return 0 end
` + semDropExpiredLua + semKeepLua + `
local f = idemField(redis.call('HGET', KEYS[2], ARGV[1]))
if f then redis.call('HDEL', KEYS[2], f) end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
keep()
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 1
`)

// semForceReleaseScript ends every permit of a semaphore (an admin's
// override) and announces it like semReleaseScript.
//
// KEYS[1] permits, KEYS[2] permits' details
// ARGV[1] release channel, ARGV[2] the semaphore's name
//
// Returns how many live permits ended.
var semForceReleaseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = redis.call('ZCOUNT', KEYS[1], string.format('%.0f', now), '+inf')
redis.call('DEL', KEYS[1], KEYS[2])
if n > 0 then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return n
`)

// semInfoScript reads a semaphore's live permits by the Redis clock.
//
// KEYS[1] permits, KEYS[2] permits' details
//
// Returns {limit, now_ms, then per live permit in expiry order: owner,
// acquired_at_ms, expires_at_ms}, or {0} when no permit is live.
var semInfoScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', now), '+inf', 'WITHSCORES')
if #live == 0 then return {0} end
local out = {tonumber(redis.call('HGET', KEYS[2], 'limit') or 0), now}
for i = 1, #live, 2 do
  local acq, owner = string.match(redis.call('HGET', KEYS[2], live[i]) or '', '^(%d+)|[^|]*|(.*)$')
  table.insert(out, owner or '')
  table.insert(out, tonumber(acq or 0))
  table.insert(out, tonumber(live[i + 1]))
end
return out
`)
