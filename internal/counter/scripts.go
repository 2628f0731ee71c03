package counter

import "github.com/redis/go-redis/v9"

// Values are kept as decimal strings, formatted with string.format('%.0f'):
// Lua numbers are doubles, exact for every integer within ±MaxValue, and
// tostring would write large ones as 1e+15.

// ttlLua defines expire(ttl, existed), which applies a TTL argument to
// KEYS[1]: ttl > 0 expires it in ttl ms, 0 makes it persist, -1 keeps the
// expiry of a counter that existed and gives a new one ARGV's default
// (defttl, ms; 0 none). It returns the PTTL (-1 for none).
const ttlLua = `
local function expire(ttl, existed, defttl)
  if ttl < 0 and not existed then ttl = defttl end
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl)
  elseif ttl == 0 then redis.call('PERSIST', KEYS[1]) end
  return redis.call('PTTL', KEYS[1])
end
`

// addScript adds to a counter, or answers a keyed increment it remembers.
//
// KEYS[1] the counter (hash), KEYS[2] the keyed increments remembered
// (hash: key → "<digest> <value>"), KEYS[3] when each is forgotten (sorted
// set: key → ms, Redis clock)
// ARGV[1] by, ARGV[2] TTL in ms (-1: unset), ARGV[3] the default TTL in ms
// (0: none), ARGV[4] idempotency key ("": none), ARGV[5] the request's
// digest, ARGV[6] the bound on the value (MaxValue), ARGV[7] how long a
// key is remembered (ms), ARGV[8] how many keys at most
//
// Returns {value, pttl, outcome}: outcome 0 applied, 1 replayed (value: the
// one the remembered increment made), -1 key remembered with another
// digest, -2 overflow (nothing changed for -1 and -2).
var addScript = redis.NewScript(ttlLua + `
local key = ARGV[4]
if key ~= '' then
  local seen = redis.call('HGET', KEYS[2], key)
  if seen then
    local d, v = string.match(seen, '^(%S+) (%S+)$')
    if d ~= ARGV[5] then return {0, 0, -1} end
    return {tonumber(v), redis.call('PTTL', KEYS[1]), 1}
  end
end
local cur = redis.call('HGET', KEYS[1], 'v')
local v = tonumber(cur or '0') + tonumber(ARGV[1])
local bound = tonumber(ARGV[6])
if v > bound or v < -bound then return {0, 0, -2} end
local s = string.format('%.0f', v)
redis.call('HSET', KEYS[1], 'v', s)
if key ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  -- Forget lapsed keys (up to 16: each keyed increment adds one), then
  -- the oldest past the most kept.
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', string.format('%.0f', now), 'LIMIT', 0, 16)
  local over = redis.call('ZCARD', KEYS[3]) - #gone - tonumber(ARGV[8]) + 1
  if over > 0 then gone = redis.call('ZRANGE', KEYS[3], 0, #gone + over - 1) end
  for _, k in ipairs(gone) do
    redis.call('HDEL', KEYS[2], k)
    redis.call('ZREM', KEYS[3], k)
  end
  local window = tonumber(ARGV[7])
  redis.call('HSET', KEYS[2], key, ARGV[5] .. ' ' .. s)
  redis.call('ZADD', KEYS[3], string.format('%.0f', now + window), key)
  -- Every key lapses within the window of the latest: so do both sets.
  redis.call('PEXPIRE', KEYS[2], window)
  redis.call('PEXPIRE', KEYS[3], window)
end
return {v, expire(tonumber(ARGV[2]), cur ~= false, tonumber(ARGV[3])), 0}
`)

// setScript sets a counter's value.
//
// KEYS[1] the counter (hash)
// ARGV[1] value, ARGV[2] TTL in ms (-1: unset), ARGV[3] the default TTL in ms
//
// Returns {value, pttl}.
var setScript = redis.NewScript(ttlLua + `
local existed = redis.call('EXISTS', KEYS[1]) == 1
redis.call('HSET', KEYS[1], 'v', ARGV[1])
return {tonumber(ARGV[1]), expire(tonumber(ARGV[2]), existed, tonumber(ARGV[3]))}
`)
