package store

import "github.com/redis/go-redis/v9"

// The Redis layout of one key (see also package keys):
//
//	ms:{ns/a/b}/c      hash   the key's siblings and bookkeeping:
//	                            etag    opaque id of the current state, new on every write
//	                            exp     expiry in Unix ms, "0" for none
//	                            seq     last sibling id handed out
//	                            clocks  "id|writer|clock;…" for every live sibling, the
//	                                    clock in clock.Vector's text form; the scripts
//	                                    read only this, never the values
//	                            s:<id>  one sibling's envelope as JSON:
//	                                    {"version":{…},"timestamp":…,"writer":"…","value":…}
//	ms:{ns/a/b}#keys   zset   the subtree's keys (member: key, score: expiry ms or +inf);
//	                          exact: only the scripts change it
//
// Values are opaque to the scripts: Lua's cjson would round big integers
// through doubles and turn [] into {}, so a value is only ever concatenated,
// never decoded, on the Redis side.

// putScript writes one envelope as a new sibling and removes every sibling
// that the new version dominates, in one atomic step.
//
// The new version is the merge of the context and the writer's own siblings'
// versions, with the writer's counter raised above every counter that writer
// has at this key (in any sibling or in the context). So a write with a
// context supersedes what the context has seen, and a write without one
// supersedes the same writer's earlier siblings only.
//
// KEYS[1] the data hash; KEYS[2] the subtree index (same hash slot)
// ARGV[1] the key (index member)
// ARGV[2] writer id
// ARGV[3] context clock in text form, "" for none
// ARGV[4] the envelope after its version: `,"timestamp":…,"writer":"…","value":…}`
// ARGV[5] expiry in Unix ms, "0" for none
// ARGV[6] If-Match etag, "*" for any existing state, "" for none
// ARGV[7] "1" for If-None-Match: *
// ARGV[8] the etag of the state this write creates
//
// Returns {"ok", etag, version, siblings, superseded, expired, blob…} where
// version is the new sibling's clock in text form, siblings the count after
// the write, superseded the count removed, expired 1 when the key had
// expired but was still in the subtree index (the sweeper had not announced
// it yet; the caller does), and blob… the envelopes of the other siblings
// still present (none when the write left a single sibling); or
// {"precondition_failed", current etag or ""} when a condition fails.
var putScript = redis.NewScript(`
local function parse(s)
  local v = {}
  for id, n in string.gmatch(s, "([^,=]+)=(%d+)") do v[id] = tonumber(n) end
  return v
end
local function dominated(a, b)
  for id, n in pairs(a) do
    if n > (b[id] or 0) then return false end
  end
  return true
end

local cur = redis.call("HMGET", KEYS[1], "etag", "clocks")
local etag, clocks = cur[1], cur[2]
if ARGV[6] == "*" then
  if not etag then return {"precondition_failed", ""} end
elseif ARGV[6] ~= "" and etag ~= ARGV[6] then
  return {"precondition_failed", etag or ""}
end
if ARGV[7] == "1" and etag then return {"precondition_failed", etag} end

local expired = 0
if not etag then
  local old = redis.call("ZSCORE", KEYS[2], ARGV[1])
  if old and old ~= "inf" then expired = 1 end
end

local w = ARGV[2]
local new = parse(ARGV[3])
local top = new[w] or 0
local sibs = {}
if clocks then
  for id, writer, c in string.gmatch(clocks, "([^|;]+)|([^|;]+)|([^|;]*)") do
    local v = parse(c)
    sibs[#sibs + 1] = {id = id, entry = id .. "|" .. writer .. "|" .. c, v = v}
    if (v[w] or 0) > top then top = v[w] end
    if writer == w then
      for k, n in pairs(v) do
        if n > (new[k] or 0) then new[k] = n end
      end
    end
  end
end
new[w] = top + 1

local ids = {}
for id in pairs(new) do ids[#ids + 1] = id end
table.sort(ids)
local text, json = {}, {}
for i, id in ipairs(ids) do
  local n = string.format("%d", new[id])
  text[i] = id .. "=" .. n
  json[i] = '"' .. id .. '":' .. n
end
local version = table.concat(text, ",")

local keep, gone, others = {}, {}, {}
for _, s in ipairs(sibs) do
  if dominated(s.v, new) then
    gone[#gone + 1] = "s:" .. s.id
  else
    keep[#keep + 1] = s.entry
    others[#others + 1] = "s:" .. s.id
  end
end
if #gone > 0 then redis.call("HDEL", KEYS[1], unpack(gone)) end

local id = redis.call("HINCRBY", KEYS[1], "seq", 1)
keep[#keep + 1] = id .. "|" .. w .. "|" .. version
redis.call("HSET", KEYS[1],
  "s:" .. id, '{"version":{' .. table.concat(json, ",") .. '}' .. ARGV[4],
  "clocks", table.concat(keep, ";"),
  "etag", ARGV[8],
  "exp", ARGV[5])
if ARGV[5] ~= "0" then
  redis.call("PEXPIREAT", KEYS[1], ARGV[5])
  redis.call("ZADD", KEYS[2], ARGV[5], ARGV[1])
else
  redis.call("PERSIST", KEYS[1])
  redis.call("ZADD", KEYS[2], "+inf", ARGV[1])
end

local out = {"ok", ARGV[8], version, #keep, #gone, expired}
if #others > 0 then
  local blobs = redis.call("HMGET", KEYS[1], unpack(others))
  for _, b in ipairs(blobs) do out[#out + 1] = b end
end
return out
`)

// deleteScript removes a key and its index entry.
//
// KEYS[1] the data hash; KEYS[2] the subtree index
// ARGV[1] the key (index member)
// ARGV[2] If-Match etag, "*" for any existing state, "" for none
//
// Returns 1 when deleted, 0 when the key did not exist, -1 when If-Match
// did not match (nothing changed).
var deleteScript = redis.NewScript(`
local etag = redis.call("HGET", KEYS[1], "etag")
if not etag then
  redis.call("ZREM", KEYS[2], ARGV[1])
  return 0
end
if ARGV[2] ~= "" and ARGV[2] ~= "*" and etag ~= ARGV[2] then return -1 end
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], ARGV[1])
return 1
`)

// sweepScript decides whether a key the expiry index lists has expired, and
// if so claims the announcement: the subtree index entry is removed
// atomically, so of several instances sweeping at once exactly one gets
// "expired".
//
// KEYS[1] the data hash; KEYS[2] the subtree index
// ARGV[1] the key; ARGV[2] now, Unix ms
//
// Returns {"gone"} when the index no longer lists the key (deleted, or
// already announced); {"live", score} when it was written again and now
// expires at score ("inf": never); {"wait"} when the index says expired but
// Redis still has the data (clock skew: try again later); {"expired"} when
// this caller must announce the expiry.
var sweepScript = redis.NewScript(`
local score = redis.call("ZSCORE", KEYS[2], ARGV[1])
if not score then return {"gone"} end
if score == "inf" or tonumber(score) > tonumber(ARGV[2]) then return {"live", score} end
if redis.call("EXISTS", KEYS[1]) == 1 then return {"wait"} end
redis.call("ZREM", KEYS[2], ARGV[1])
return {"expired"}
`)

// unlistExpiryScript removes an entry from the expiry index only while its
// score is in the past, so that an entry a write has just moved into the
// future survives a sweep that read the old one.
//
// KEYS[1] the expiry index
// ARGV[1] the member ("ns/key"); ARGV[2] now, Unix ms
//
// Returns 1 when removed, 0 otherwise.
var unlistExpiryScript = redis.NewScript(`
local s = redis.call("ZSCORE", KEYS[1], ARGV[1])
if s and s ~= "inf" and tonumber(s) <= tonumber(ARGV[2]) then
  return redis.call("ZREM", KEYS[1], ARGV[1])
end
return 0
`)
