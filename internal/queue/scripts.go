package queue

import "github.com/redis/go-redis/v9"

// The scripts are every read-modify-write of a queue. Each names in KEYS the
// keys it touches, all in the queue's hash slot, and stamps times with Redis
// TIME, so that every instance's claims run on one clock.
//
// A message's details live in the queue's hash under two fields: "v:<id>",
// its value as JSON, and "m:<id>", "<attempts>|<enqueued_at>|<receipt>|
// <owner>" (the receipt and owner of its latest claim, empty before one;
// the owner last, as it may hold any character). Numbers are formatted with
// string.format('%.0f', n) (see package lock's scripts).

// enqueueScript adds a message, visible after a delay, and announces a
// message visible now on the namespace's channel, which wakes waiting
// claims on every instance.
//
// KEYS[1] ready (sorted set: id → when visible, ms), KEYS[2] details
// (hash), KEYS[3] the last id given (string)
// ARGV[1] value (JSON), ARGV[2] delay in ms, ARGV[3] channel, ARGV[4] the
// queue's name (the message)
//
// Returns {id, enqueued_at_ms, visible_at_ms}. Ids are 16 digits, so that
// messages visible at the same millisecond are claimed in the order sent.
var enqueueScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = string.format('%016.0f', redis.call('INCR', KEYS[3]))
local at = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[2], 'v:' .. id, ARGV[1], 'm:' .. id, '0|' .. string.format('%.0f', now) .. '||')
redis.call('ZADD', KEYS[1], string.format('%.0f', at), id)
if at <= now then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return {id, now, at}
`)

// claimScript claims up to max visible messages, oldest first, for a
// visibility timeout: they leave the ready set for the in-flight set until
// then, each with a new receipt and one attempt more. Messages in flight
// whose timeout passed are visible again first (as of when it passed).
//
// KEYS[1] ready, KEYS[2] details, KEYS[3] in flight (sorted set: id → end of
// the visibility timeout, ms)
// ARGV[1] visibility timeout in ms, ARGV[2] owner, ARGV[3..] one receipt
// per message to claim at most
//
// Returns {now_ms, next_ms} when none is visible (next_ms: when the first
// may be, 0 when the queue is empty), else {now_ms, 0, then per message: id,
// value, attempts, enqueued_at_ms, visible_again_at_ms}.
var claimScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%.0f', now), 'WITHSCORES')
for i = 1, #lapsed, 2 do
  redis.call('ZREM', KEYS[3], lapsed[i])
  redis.call('ZADD', KEYS[1], lapsed[i + 1], lapsed[i])
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now), 'LIMIT', 0, #ARGV - 2)
if #ids == 0 then
  local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
  local busy = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')[2]
  if busy and (not next or tonumber(busy) < tonumber(next)) then next = busy end
  return {now, tonumber(next or 0)}
end
local until_ = now + tonumber(ARGV[1])
local out = {now, 0}
for i, id in ipairs(ids) do
  local attempts, enq = string.match(redis.call('HGET', KEYS[2], 'm:' .. id) or '', '^(%d+)|(%d+)|')
  attempts = (tonumber(attempts) or 0) + 1
  enq = enq or '0'
  redis.call('HSET', KEYS[2], 'm:' .. id, string.format('%.0f', attempts) .. '|' .. enq .. '|' .. ARGV[2 + i] .. '|' .. ARGV[2])
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[3], string.format('%.0f', until_), id)
  table.insert(out, id)
  table.insert(out, redis.call('HGET', KEYS[2], 'v:' .. id) or 'null')
  table.insert(out, attempts)
  table.insert(out, tonumber(enq))
  table.insert(out, until_)
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
// it since.
//
// KEYS[1] details, KEYS[2] ready, KEYS[3] in flight
// ARGV[1] id, ARGV[2] receipt
//
// Returns 1, or 0 when the receipt does not hold the message (claimed
// again since, released, or deleted); then nothing changes.
var ackScript = redis.NewScript(receiptLua + `
if not held(ARGV[1]) then return 0 end
redis.call('HDEL', KEYS[1], 'v:' .. ARGV[1], 'm:' .. ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
`)

// releaseScript gives a claimed message back, visible after a delay; its
// receipt then holds nothing.
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
local attempts, enq = string.match(redis.call('HGET', KEYS[1], 'm:' .. ARGV[1]), '^(%d+)|(%d+)|')
redis.call('HSET', KEYS[1], 'm:' .. ARGV[1], attempts .. '|' .. enq .. '||')
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
// KEYS[1] ready, KEYS[2] in flight
//
// Returns {visible now (including those whose timeout passed), delayed, in
// flight}.
var statsScript = redis.NewScript(`
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local lapsed = redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. now)
return {redis.call('ZCOUNT', KEYS[1], '-inf', now) + lapsed,
  redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'),
  redis.call('ZCARD', KEYS[2]) - lapsed}
`)
