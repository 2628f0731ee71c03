package barrier

import "github.com/redis/go-redis/v9"

// The scripts stamp times with Redis TIME, so that every instance's
// arrivals lapse on one clock. A barrier's hash holds "gen" (the
// generation waited on now), "parties", "last" (the parties that passed
// the previous generation, comma separated: party names are key segments,
// which hold no comma) and "i:<party> <idempotency key>" → the generation
// an arrival under that key arrived in, for that generation and the one
// before (the party and the key, space separated: neither holds one).
// Numbers are formatted with string.format('%.0f', n).

// arriveScript counts a party in at the barrier's current generation, and
// trips the barrier when that makes the parties it asks for: the
// generation moves on, the arrivals are cleared, and the barrier's name is
// published so that the waiters of every instance look again. An arrival
// whose generation has passed (expected, or the one its idempotency key
// names) is told so, and arrives nowhere.
//
// KEYS[1] the barrier (hash), KEYS[2] its arrivals (sorted set: party →
// when the arrival lapses, ms)
// ARGV[1] party, ARGV[2] parties, ARGV[3] how long the arrival counts from
// now (ms), ARGV[4] the generation the caller arrived in before (-1:
// none), ARGV[5] idempotency key ("": none), ARGV[6] channel, ARGV[7] the
// barrier's name (the message), ARGV[8] how long an idle barrier is kept
// (ms)
//
// Returns {outcome, generation, parties, then parties' names}: outcome 2
// this arrival tripped the barrier, 1 passed (the generation passed, and
// who passed it when that generation is the latest passed), 0 waiting (the
// generation waited on, and who has arrived), -1 the barrier asks for
// another number of parties (its number), -2 a reset broke the generation
// the caller arrived at.
var arriveScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
local expected = tonumber(ARGV[4])
if ARGV[5] ~= '' then
  local g = redis.call('HGET', KEYS[1], 'i:' .. ARGV[1] .. ' ' .. ARGV[5])
  if g then expected = tonumber(g) end
end
if expected >= 0 and gen > expected then
  if redis.call('HGET', KEYS[1], 'broken') == string.format('%.0f', expected) then return {-2, expected, 0} end
  local out = {1, expected, tonumber(redis.call('HGET', KEYS[1], 'parties') or ARGV[2])}
  if expected == gen - 1 then
    for p in string.gmatch(redis.call('HGET', KEYS[1], 'last') or '', '[^,]+') do table.insert(out, p) end
  end
  return out
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%.0f', now))
local want = tonumber(ARGV[2])
local have = tonumber(redis.call('HGET', KEYS[1], 'parties') or '0')
if have ~= want and redis.call('ZCARD', KEYS[2]) > 0 then return {-1, gen, have} end
redis.call('HSET', KEYS[1], 'parties', want, 'gen', string.format('%.0f', gen))
redis.call('ZADD', KEYS[2], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'i:' .. ARGV[1] .. ' ' .. ARGV[5], string.format('%.0f', gen)) end
local members = redis.call('ZRANGE', KEYS[2], 0, -1)
redis.call('PEXPIRE', KEYS[1], ARGV[8])
if #members >= want then
  redis.call('HSET', KEYS[1], 'gen', string.format('%.0f', gen + 1), 'last', table.concat(members, ','))
  redis.call('DEL', KEYS[2])
  -- Keys of generations before this one can no longer be asked about.
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'i:' and tonumber(all[i + 1]) < gen then redis.call('HDEL', KEYS[1], all[i]) end
  end
  redis.call('PUBLISH', ARGV[6], ARGV[7])
  local out = {2, gen, want}
  for _, p in ipairs(members) do table.insert(out, p) end
  return out
end
redis.call('PEXPIRE', KEYS[2], ARGV[8])
local out = {0, gen, want}
for _, p in ipairs(members) do table.insert(out, p) end
return out
`)

// resetScript breaks a barrier's current generation: its arrivals are
// dropped and the next generation begins without a trip; the parties that
// waited are told so (arriveScript's -2), and the barrier's name is
// published to wake them.
//
// KEYS[1] the barrier, KEYS[2] its arrivals
// ARGV[1] channel, ARGV[2] the barrier's name
//
// Returns {the generation broken, how many parties had arrived}, or {}
// for a barrier Redis does not hold.
var resetScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
local arrived = redis.call('ZCOUNT', KEYS[2], string.format('%.0f', now), '+inf')
redis.call('HSET', KEYS[1], 'gen', string.format('%.0f', gen + 1), 'broken', string.format('%.0f', gen), 'last', '')
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return {gen, arrived}
`)

// stateScript reads a barrier: its generation, parties and live arrivals.
//
// KEYS[1] the barrier, KEYS[2] its arrivals
//
// Returns {} for a barrier Redis does not hold, else {generation, parties,
// then the parties arrived}.
var stateScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {tonumber(redis.call('HGET', KEYS[1], 'gen') or '0'), tonumber(redis.call('HGET', KEYS[1], 'parties') or '0')}
for _, p in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], string.format('%.0f', now), '+inf')) do table.insert(out, p) end
return out
`)

// leaveScript withdraws a party's arrival at a generation, if that
// generation has not passed.
//
// KEYS[1] the barrier, KEYS[2] its arrivals
// ARGV[1] party, ARGV[2] the generation it arrived in
//
// Returns 1 when it withdrew, else 0.
var leaveScript = redis.NewScript(`
if tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') ~= tonumber(ARGV[2]) then return 0 end
return redis.call('ZREM', KEYS[2], ARGV[1])
`)
