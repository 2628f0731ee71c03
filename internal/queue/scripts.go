package queue

import "github.com/redis/go-redis/v9"

// The scripts are every read-modify-write of a queue. Each names in KEYS the
// keys it touches, all in the queue's hash slot, and stamps times with Redis
// TIME, so that every instance's claims run on one clock.
//
// A message's details live in the queue's hash under these fields: "v:<id>",
// its value as JSON; "m:<id>", "<attempts>|<enqueued_at>|<receipt>|<owner>"
// (the receipt and owner of its latest claim, empty before one; the owner
// last, as it may hold any character); "x:<id>", its most attempts, when
// bounded; "e:<id>", when it expires (ms), when it does; "d:<id>", when it went to the dead letters, while there. The
// hash also holds "k:<idempotency key>", "<id>|<enqueued_at>|<visible_at>|
// <digest>", for each key remembered. Numbers are formatted with
// string.format('%.0f', n) (see package lock's scripts).

// enqueueScript adds a message, visible after a delay, and announces a
// message visible now on the namespace's channel, which wakes waiting
// claims on every instance. An enqueue under an idempotency key the queue
// remembers adds nothing: it answers what the first one did.
//
// KEYS[1] ready (sorted set: id → when visible, ms), KEYS[2] details
// (hash), KEYS[3] the last id given (string), KEYS[4] remembered
// idempotency keys (sorted set: key → when forgotten, ms), KEYS[5] in
// flight (sorted set)
// ARGV[1] value (JSON), ARGV[2] delay in ms, ARGV[3] channel, ARGV[4] the
// queue's name (the message), ARGV[5] most attempts (0: no bound), ARGV[6]
// idempotency key ("": none), ARGV[7] the request's digest, ARGV[8] how
// long a key is remembered, ms, ARGV[9] how long the message lives, ms (0:
// until acked), ARGV[10] the most messages the queue may hold for this one
// to be added (0: no bound)
//
// Returns {id, enqueued_at_ms, visible_at_ms, replayed}: replayed is 0 for
// a message added, 1 for a key remembered with the same digest, -1 for one
// remembered with another (then the id is the first enqueue's), -2 for a
// queue full (then nothing was added, and id is ""). Ids are 16
// digits, so that messages visible at the same millisecond are claimed in
// the order sent.
var enqueueScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idem = ARGV[6]
if idem ~= '' then
  -- Forget up to 100 lapsed keys: each keyed enqueue remembers one.
  local lapsed = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', string.format('%.0f', now), 'LIMIT', 0, 100)
  for _, k in ipairs(lapsed) do
    redis.call('HDEL', KEYS[2], 'k:' .. k)
    redis.call('ZREM', KEYS[4], k)
  end
  local seen = redis.call('HGET', KEYS[2], 'k:' .. idem)
  if seen then
    local id, enq, at, digest = string.match(seen, '^(%d+)|(%d+)|(%d+)|(.*)$')
    local replayed = 1
    if digest ~= ARGV[7] then replayed = -1 end
    return {id, tonumber(enq), tonumber(at), replayed}
  end
end
local maxlen = tonumber(ARGV[10])
if maxlen > 0 and redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[5]) >= maxlen then
  return {'', now, now, -2}
end
local id = string.format('%016.0f', redis.call('INCR', KEYS[3]))
local at = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[2], 'v:' .. id, ARGV[1], 'm:' .. id, '0|' .. string.format('%.0f', now) .. '||')
if tonumber(ARGV[5]) > 0 then redis.call('HSET', KEYS[2], 'x:' .. id, ARGV[5]) end
if tonumber(ARGV[9]) > 0 then redis.call('HSET', KEYS[2], 'e:' .. id, string.format('%.0f', now + tonumber(ARGV[9]))) end
if idem ~= '' then
  redis.call('HSET', KEYS[2], 'k:' .. idem, id .. '|' .. string.format('%.0f', now) .. '|' .. string.format('%.0f', at) .. '|' .. ARGV[7])
  redis.call('ZADD', KEYS[4], string.format('%.0f', now + tonumber(ARGV[8])), idem)
end
redis.call('ZADD', KEYS[1], string.format('%.0f', at), id)
if at <= now then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return {id, now, at, 0}
`)

// claimScript claims up to max visible messages, oldest first, for a
// visibility timeout: they leave the ready set for the in-flight set until
// then, each with a new receipt and one attempt more. Messages in flight
// whose timeout passed are visible again first (as of when it passed). A
// visible message already claimed as many times as its most attempts
// allow goes to the dead letters instead, held by no receipt, and the
// claim takes the next one; one past its expiry is deleted.
//
// KEYS[1] ready, KEYS[2] details, KEYS[3] in flight (sorted set: id → end of
// the visibility timeout, ms), KEYS[4] dead letters (sorted set: id → id as
// a number, so that they list in the order added)
// ARGV[1] visibility timeout in ms, ARGV[2] owner, ARGV[3..] one receipt
// per message to claim at most
//
// Returns {now_ms, next_ms, dead, expired} when none was claimed (next_ms:
// when the first may be visible, 0 when the queue is empty; dead: how many
// went to the dead letters; expired: how many were deleted), else {now_ms,
// 0, dead, expired, then per message: id, value, attempts, enqueued_at_ms,
// visible_again_at_ms, most attempts (0: no bound), expires_at_ms (0:
// none)}.
var claimScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%.0f', now), 'WITHSCORES')
for i = 1, #lapsed, 2 do
  redis.call('ZREM', KEYS[3], lapsed[i])
  redis.call('ZADD', KEYS[1], lapsed[i + 1], lapsed[i])
end
local want = #ARGV - 2
local until_ = now + tonumber(ARGV[1])
local out = {now, 0, 0, 0}
local got, dead, expired = 0, 0, 0
while got < want do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now), 'LIMIT', 0, want - got)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    redis.call('ZREM', KEYS[1], id)
    local attempts, enq, owner = string.match(redis.call('HGET', KEYS[2], 'm:' .. id) or '', '^(%d+)|(%d+)|[^|]*|(.*)$')
    attempts = tonumber(attempts) or 0
    enq = enq or '0'
    local most = tonumber(redis.call('HGET', KEYS[2], 'x:' .. id) or '0')
    local expires = tonumber(redis.call('HGET', KEYS[2], 'e:' .. id) or '0')
    if expires > 0 and expires <= now then
      redis.call('HDEL', KEYS[2], 'v:' .. id, 'm:' .. id, 'x:' .. id, 'e:' .. id)
      expired = expired + 1
    elseif most > 0 and attempts >= most then
      redis.call('HSET', KEYS[2], 'm:' .. id, string.format('%.0f', attempts) .. '|' .. enq .. '||' .. (owner or ''),
        'd:' .. id, string.format('%.0f', now))
      redis.call('ZADD', KEYS[4], id, id)
      dead = dead + 1
    else
      got = got + 1
      attempts = attempts + 1
      redis.call('HSET', KEYS[2], 'm:' .. id, string.format('%.0f', attempts) .. '|' .. enq .. '|' .. ARGV[2 + got] .. '|' .. ARGV[2])
      redis.call('ZADD', KEYS[3], string.format('%.0f', until_), id)
      table.insert(out, id)
      table.insert(out, redis.call('HGET', KEYS[2], 'v:' .. id) or 'null')
      table.insert(out, attempts)
      table.insert(out, tonumber(enq))
      table.insert(out, until_)
      table.insert(out, most)
      table.insert(out, expires)
    end
  end
end
out[3] = dead
out[4] = expired
if got == 0 then
  local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
  local busy = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')[2]
  if busy and (not next or tonumber(busy) < tonumber(next)) then next = busy end
  out[2] = tonumber(next or 0)
end
return out
`)

// receiptLua defines held(id), which says whether ARGV[2] is the receipt
// of message id's latest claim, with KEYS[1] the details.
const receiptLua = `
local function held(id)
  local r = string.match(redis.call('HGET', KEYS[1], 'm:' .. id) or '', '^%d+|%d+|([^|]*)|')
  return r ~= nil and r ~= '' and r == ARGV[2]
end
`

// ackScript deletes a message the receipt holds: the one of its latest
// claim, even when its visibility timeout passed, as long as no claim took
// it since and it did not go to the dead letters.
//
// KEYS[1] details, KEYS[2] ready, KEYS[3] in flight
// ARGV[1] id, ARGV[2] receipt
//
// Returns 1, or 0 when the receipt does not hold the message (claimed
// again since, released, or deleted); then nothing changes.
var ackScript = redis.NewScript(receiptLua + `
if not held(ARGV[1]) then return 0 end
redis.call('HDEL', KEYS[1], 'v:' .. ARGV[1], 'm:' .. ARGV[1], 'x:' .. ARGV[1], 'e:' .. ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
`)

// releaseScript gives a claimed message back, visible after a delay; its
// receipt then holds nothing (its owner stays, for a dead letter to name).
//
// KEYS[1] details, KEYS[2] ready, KEYS[3] in flight
// ARGV[1] id, ARGV[2] receipt, ARGV[3] delay in ms, ARGV[4] channel,
// ARGV[5] the queue's name
//
// Returns 1, or 0 as ackScript.
var releaseScript = redis.NewScript(receiptLua + `
if not held(ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local attempts, enq, owner = string.match(redis.call('HGET', KEYS[1], 'm:' .. ARGV[1]), '^(%d+)|(%d+)|[^|]*|(.*)$')
redis.call('HSET', KEYS[1], 'm:' .. ARGV[1], attempts .. '|' .. enq .. '||' .. owner)
redis.call('ZREM', KEYS[3], ARGV[1])
local at = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], string.format('%.0f', at), ARGV[1])
if at <= now then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
`)

// extendScript sets a new visibility timeout, from now, on a message the
// receipt holds that is still in flight.
//
// KEYS[1] details, KEYS[2] in flight
// ARGV[1] id, ARGV[2] receipt, ARGV[3] visibility timeout in ms
//
// Returns the new end of the timeout in ms, or 0 when the receipt does not
// hold the message or a claim found its timeout passed.
var extendScript = redis.NewScript(receiptLua + `
if not held(ARGV[1]) or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
local t = redis.call('TIME')
local until_ = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], string.format('%.0f', until_), ARGV[1])
return until_
`)

// statsScript counts a queue's messages by the Redis clock.
//
// KEYS[1] ready, KEYS[2] in flight, KEYS[3] dead letters
//
// Returns {visible now (including those whose timeout passed), delayed, in
// flight, dead}.
var statsScript = redis.NewScript(`
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local lapsed = redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. now)
return {redis.call('ZCOUNT', KEYS[1], '-inf', now) + lapsed,
  redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'),
  redis.call('ZCARD', KEYS[2]) - lapsed,
  redis.call('ZCARD', KEYS[3])}
`)

// deadScript reads dead letters in the order added.
//
// KEYS[1] dead letters, KEYS[2] details
// ARGV[1] the id to start after ("": from the first), ARGV[2] how many at
// most
//
// Returns {dead letters in all, then per message: id, value, details
// ("<attempts>|<enqueued_at>||<owner>"), most attempts, dead since (ms)}.
var deadScript = redis.NewScript(`
local from = '-inf'
if ARGV[1] ~= '' then from = '(' .. string.format('%.0f', tonumber(ARGV[1])) end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {redis.call('ZCARD', KEYS[1])}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', KEYS[2], 'v:' .. id, 'm:' .. id, 'x:' .. id, 'd:' .. id)
  table.insert(out, id)
  table.insert(out, f[1] or 'null')
  table.insert(out, f[2] or '')
  table.insert(out, tonumber(f[3] or '0'))
  table.insert(out, tonumber(f[4] or '0'))
end
return out
`)

// redriveScript gives dead letters back to the queue, visible at once
// with their attempts counted from 0 again, and announces them.
//
// KEYS[1] dead letters, KEYS[2] details, KEYS[3] ready
// ARGV[1] channel, ARGV[2] the queue's name, ARGV[3] how many at most
// (oldest first), ARGV[4..] the ids to give back instead (those dead)
//
// Returns {given back, dead letters left}.
var redriveScript = redis.NewScript(`
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local ids = {}
if #ARGV > 3 then
  for i = 4, #ARGV do
    if redis.call('ZSCORE', KEYS[1], ARGV[i]) then table.insert(ids, ARGV[i]) end
  end
else
  ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)
end
for _, id in ipairs(ids) do
  local enq = string.match(redis.call('HGET', KEYS[2], 'm:' .. id) or '', '^%d+|(%d+)|') or '0'
  redis.call('HSET', KEYS[2], 'm:' .. id, '0|' .. enq .. '||')
  redis.call('HDEL', KEYS[2], 'd:' .. id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[3], now, id)
end
if #ids > 0 then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return {#ids, redis.call('ZCARD', KEYS[1])}
`)

// dropDeadScript deletes a dead letter.
//
// KEYS[1] dead letters, KEYS[2] details
// ARGV[1] id
//
// Returns 1, or 0 when the message is not a dead letter.
var dropDeadScript = redis.NewScript(`
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], 'v:' .. ARGV[1], 'm:' .. ARGV[1], 'x:' .. ARGV[1], 'd:' .. ARGV[1], 'e:' .. ARGV[1])
return 1
`)
