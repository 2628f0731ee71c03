package store

import "github.com/redis/go-redis/v9"

// The Redis layout of one key (see also package keys):
//
//	ms:{ns/a/b}/c      hash   the key's siblings and bookkeeping:
//	                            etag    opaque id of the current state, new on every write
//	                            exp     expiry in Unix ms, "0" for none
//	                            seq     last new sibling id handed out (a write reuses
//	                                    the id of a sibling it supersedes)
//	                            clocks  "id|writer|clock;…" for every live sibling, the
//	                                    clock in clock.Vector's text form; the scripts
//	                                    read only this, never the values
//	                            idem    "id digest etag;…": the idempotency keys of
//	                                    the latest writes that carried one, latest
//	                                    first, with a digest of each request and the
//	                                    etag it made (PutRequest.IdempotencyKey)
//	                            s:<id>  one sibling's envelope after its version,
//	                                    as the write passed it in (its version is
//	                                    in clocks): ,"timestamp":…,"writer":"…","value":…}
//	                                    (earlier versions stored the whole envelope,
//	                                    {"version":{…},"timestamp":…}; both are read)
//	ms:{ns/a/b}/c#deleted string  after deletes of the key with an idempotency
//	                          key: "id digest;…" (deleteIdempotencyArg; "id
//	                          digest absent" when it found no key), the
//	                          IdempotencyKeep latest first, for
//	                          DeleteIdempotencyKeep after the latest
//	ms:{ns/a/b}#keys   zset   the subtree's keys (member: key, score: expiry ms or +inf);
//	                          only the scripts change it. A score is at most the
//	                          key's expiry, not always equal to it: a commitScript
//	                          write that extends a live key's TTL leaves the score
//	                          (see settle) and sweepScript raises it when it comes due
//
// Values are opaque to the scripts: Lua's cjson would round big integers
// through doubles and turn [] into {}, so a value is only ever concatenated,
// never decoded, on the Redis side.

// dropParentsLib defines dropParents, which writeLib's del and sweepScript
// call on a single Redis for a key whose deletion or expiry left its
// subtree empty.
const dropParentsLib = `
-- dropParents takes out of the listing indexes what the deletion or the
-- expiry of key, the last in its subtree, left empty: its subtree's entry
-- in the children index, then its first segment in roots when that has
-- no children and no key of one segment, then ns when it has no roots. A
-- write that creates a key below any of them later raises them again
-- (ensureParents); one whose key still exists keeps its subtree from
-- being empty.
local function dropParents(ns, key)
  local first, second = string.match(key, "^([^/]+)/([^/]+)")
  first = first or key
  local tag = "ms:{" .. ns .. "/" .. first .. "}"
  if second then
    redis.call("ZREM", tag .. "#children", second)
    redis.call("ZREM", tag .. "#names", second)
  end
  if redis.call("EXISTS", tag .. "#children", tag .. "#keys") > 0 then return end
  local roots = "ms:{" .. ns .. "}#roots"
  redis.call("ZREM", roots, first)
  redis.call("ZREM", "ms:{" .. ns .. "}#names", first)
  if redis.call("EXISTS", roots) == 0 then redis.call("ZREM", "ms:{#memsync}#namespaces", ns) end
end
`

// writeLib is the Lua shared by putScript, deleteScript and commitScript:
// the one implementation of a write.
//
// put(kd, ki, key, w, ctx, tail, exp, ifm, inm, etag, xi, ns) writes one envelope
// as a new sibling and removes every sibling that the new version
// dominates, in one atomic step.
//
// The new version is the merge of the context and the writer's own siblings'
// versions, with the writer's counter raised above every counter that writer
// has at this key (in any sibling or in the context). So a write with a
// context supersedes what the context has seen, and a write without one
// supersedes the same writer's earlier siblings only.
//
//	kd    the data hash; ki the subtree index (same hash slot)
//	key   the key (index member)
//	w     writer id
//	ctx   context clock in text form, "" for none
//	tail  the envelope after its version: `,"timestamp":…,"writer":"…","value":…}`
//	exp   expiry in Unix ms, "0" for none
//	ifm   If-Match etag, "*" for any existing state, "" for none; then,
//	      for a write with an idempotency key, a newline and "id digest"
//	      (idempotencyArg)
//	inm   "1" for If-None-Match: *
//	etag  the etag of the state this write creates
//	xi    the global expiry index, whose member "ns/key" it scores by
//	      exp; nil to leave it to the caller
//
// The sibling's field gets tail as it is: its version is in clocks, and a
// concatenation would make Lua copy and hash the value once more.
//
// It returns "ok", etag, version, siblings, superseded, expired, vjson,
// blobs, kept, where version is the new sibling's clock in text form,
// siblings the count after the write and superseded the count removed
// (both as text), expired "1" when the key had expired but was still in
// the subtree index (the sweeper had not announced it yet; the caller
// does), vjson the new version as the inside of a JSON object, blobs the
// stored envelopes of the other siblings still present (nil when the write
// left a single sibling) and kept the clocks field written, whose entries
// name those siblings in the same order (the new one last); or
// "precondition_failed", current etag or "" when a condition fails; or
// "replayed", etag when the key remembers the write's idempotency key (its
// etag then is the one that write made), "idempotency_mismatch", "" when
// it remembers the key for another request.
// Several results rather than a table: no table per write.
//
// The index entry and the key's TTL are left alone when the key existed
// with the same expiry: they already say so, since every write keeps them
// in step with the hash's exp field.
//
// reply(…) packs put's results as putScript returns them:
// {"ok version siblings superseded expired 0"} or, with other siblings,
// {"ok …", kept, blob…}; or
// {"precondition_failed etag"}: a line of fields a client splits, rather
// than values to decode one by one (commitScript packs its own).
//
// del(kd, ki, key, ifm, ns) removes a key and its index entry. ifm is as
// put's, the idempotency argument after a newline too; a delete with one
// adds it to kd.."#deleted" (keys.Aux's "deleted"): "id digest;…", the
// IdempotencyKeep latest such deletes of the key, latest first, kept for
// DeleteIdempotencyKeep after the latest; "id digest absent" for one
// that found no key. It returns
// 1 when deleted, 0 when the key did not exist, -1 when If-Match did not
// match (nothing changed), 2 when that key remembers the delete's
// idempotency argument (applied before: nothing changed), 4 when it
// remembers it as a delete that found no key (nothing changed), -2 when it
// remembers its idempotency key for another request (nothing changed).
//
// The script that includes writeLib defines ownParents first: true where
// one script may touch every hash slot (a single Redis or Sentinel). Then
// a put that creates its key also raises the listing indexes above it
// (ensureParents), and a delete that empties its subtree takes what it
// left empty out of them (dropParents); on Cluster the caller's pipeline
// raises them, and Tidy removes what expired and, a minute after a
// delete emptied a subtree, what that delete left empty (markEmptied).
const writeLib = `
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

-- bump handles the commonest write on the cheap: a writer without context
-- replacing its own only sibling. Then the new version is that sibling's
-- with the writer's counter raised, and the sibling is superseded. It
-- returns the sibling's id, the new version's text and maybe its JSON
-- form, or nil when the write is not that one.
local function bump(clocks, w)
  -- Commonest of all: the sibling's clock counts its writer alone. One
  -- pattern match reads it; the JSON form is built here too.
  local id, sw, cw, n = string.match(clocks, "^([^|;]+)|([^|;]+)|([^,=;|]+)=(%d+)$")
  if id then
    if sw ~= w or cw ~= w then return nil end
    local m = string.format("%d", tonumber(n) + 1)
    return id, w .. "=" .. m, '"' .. w .. '":' .. m
  end
  if string.find(clocks, ";", 1, true) then return nil end
  local bar = string.find(clocks, "|", 1, true)
  if not bar or string.sub(clocks, bar + 1, bar + #w + 1) ~= w .. "|" then return nil end
  local c = "," .. string.sub(clocks, bar + #w + 2) .. ","
  local i = string.find(c, "," .. w .. "=", 1, true)
  if not i then return nil end
  local j = string.find(c, ",", i + #w + 2, true)
  local n = tonumber(string.sub(c, i + #w + 2, j - 1))
  if not n then return nil end
  return string.sub(clocks, 1, bar - 1),
    string.sub(c, 2, i) .. w .. "=" .. string.format("%d", n + 1) .. string.sub(c, j, -2)
end

-- Index updates are held back and sent as one ZADD per index (flush):
-- the writes of a batch often share a subtree index, and always the expiry
-- index. Nothing reads an index between a write and the flush: put flushes
-- before it reads one, del before it changes one, and every script before
-- it returns. ZADD applies repeated members in order, as one by one.
local pending, pendingOrder = {}, {}

local function index(zset, score, member)
  local args = pending[zset]
  if not args then
    args = {}
    pending[zset] = args
    pendingOrder[#pendingOrder + 1] = zset
  end
  args[#args + 1] = score
  args[#args + 1] = member
end

local function flush()
  for _, zset in ipairs(pendingOrder) do
    local args = pending[zset]
    for i = 1, #args, 1000 do -- unpack takes a few thousand values at most
      redis.call("ZADD", zset, unpack(args, i, math.min(i + 999, #args)))
    end
  end
  pending, pendingOrder = {}, {}
end

-- settle moves the key's TTL and index entries to exp, unless the key
-- existed (old) with that expiry already (oldexp): then they say so. The
-- expiry index xi gets member "ns/key", when given (commitScript; else the
-- caller's pipeline sets it).
--
-- When settle owns the expiry index too (xi given), a later expiry than
-- the key had moves only the TTL. The index scores then stay at the
-- earlier one: an index score is a lower bound of the key's expiry, which
-- is all the sweeper and listing need (sweepScript raises a score that
-- comes due on a live key; listing checks a key whose score has passed).
-- A key rewritten with a TTL, the common case, so costs Redis one
-- PEXPIREAT instead of two ZADDs more. Without xi (Cluster) the caller
-- scores the expiry index before the script, exactly, and the subtree
-- index follows it exactly too.
local function settle(kd, ki, key, exp, old, oldexp, xi, ns)
  if old and oldexp == exp then return end
  -- exp and oldexp are decimal texts without leading zeros: the longer is
  -- the later, and of the same length the greater.
  if xi and old and oldexp ~= "0" and exp ~= "0" and (#exp > #oldexp or #exp == #oldexp and exp > oldexp) then
    redis.call("PEXPIREAT", kd, exp)
    return
  end
  if exp ~= "0" then
    redis.call("PEXPIREAT", kd, exp)
    index(ki, exp, key)
    if xi then index(xi, exp, ns .. "/" .. key) end
  else
    redis.call("PERSIST", kd)
    index(ki, "+inf", key)
  end
end

-- ensureParents raises the listing indexes above key (see pipeIndexes):
-- ns in the namespaces index, the first segment in ns's roots, the second
-- in the first's children, to exp rounded up to the minute ("+inf" for
-- "0"). The caller's pipeline raised them already, unless its memo said
-- they were high enough; but on a single Redis a delete may have dropped
-- them since (dropParents), so a write that creates its key raises them
-- again here, in the same atomic step. Only where ownParents: the keys are
-- in other hash slots.
local raisedParents = {} -- "score ns key-parents" this call raised already
local function ensureParents(ns, key, exp)
  local score = "+inf"
  if exp ~= "0" then score = string.format("%d", math.ceil(tonumber(exp) / 60000) * 60000) end
  local first, second = string.match(key, "^([^/]+)/([^/]+)")
  first = first or key
  -- The creates of a batch mostly share their parents and, to the minute,
  -- their expiry: raise those once per call.
  local done = score .. " " .. ns .. " " .. first .. "/" .. (second or "")
  if raisedParents[done] then return end
  raisedParents[done] = true
  redis.call("ZADD", "ms:{#memsync}#namespaces", "GT", score, ns)
  redis.call("ZADD", "ms:{" .. ns .. "}#roots", "GT", score, first)
  redis.call("ZADD", "ms:{" .. ns .. "}#names", "NX", 0, first)
  if second then
    local tag = "ms:{" .. ns .. "/" .. first .. "}"
    redis.call("ZADD", tag .. "#children", "GT", score, second)
    redis.call("ZADD", tag .. "#names", "NX", 0, second)
  end
end

` + dropParentsLib + `
-- remember returns a list of remembered requests after one more, entry
-- (a put's "id digest etag", a delete's "id digest"): the entries of done
-- and entry, separated by ";", latest first, the IdempotencyKeep latest of
-- them.
local function remember(done, entry)
  local t = {entry}
  if done then
    for e in string.gmatch(done, "[^;]+") do
      if #t == 8 then break end -- IdempotencyKeep
      t[#t + 1] = e
    end
  end
  return table.concat(t, ";")
end

local function put(kd, ki, key, w, ctx, tail, exp, ifm, inm, etag, xi, ns)
  -- An idempotent write passes its idempotency argument after ifm and a
  -- newline.
  local idem
  local nl = string.find(ifm, "\n", 1, true)
  if nl then idem, ifm = string.sub(ifm, nl + 1), string.sub(ifm, 1, nl - 1) end
  -- old: whether the key exists, and its etag when a condition needs it.
  -- Every write sets clocks, so clocks says the key exists.
  local old, clocks, oldexp, done
  if ifm == "" and inm == "" and not idem then
    local cur = redis.call("HMGET", kd, "clocks", "exp")
    clocks, oldexp = cur[1], cur[2]
    old = clocks
  else
    local cur = redis.call("HMGET", kd, "etag", "clocks", "exp", "idem")
    old, clocks, oldexp, done = cur[1], cur[2], cur[3], cur[4]
  end
  -- A write the key remembers was applied: it is not applied again, and
  -- its conditions, which its own write may have made false, are not
  -- checked again either.
  if idem and done then
    local id, digest = string.match(idem, "^(%S+) (%S+)$")
    local at = string.find(";" .. done, ";" .. id .. " ", 1, true)
    if at then
      local d, e = string.match(done, "^%S+ (%S+) ([^;]+)", at)
      if d ~= digest then return "idempotency_mismatch", "" end
      return "replayed", e
    end
  end
  if idem then idem = remember(done, idem .. " " .. etag) end
  if ifm == "*" then
    if not old then return "precondition_failed", "" end
  elseif ifm ~= "" and old ~= ifm then
    return "precondition_failed", old or ""
  end
  if inm == "1" and old then return "precondition_failed", old end

  local expired = "0"
  if not old then
    flush()
    local score = redis.call("ZSCORE", ki, key)
    if score and score ~= "inf" then expired = "1" end
    if ownParents then ensureParents(ns, key, exp) end
  end

  if ctx == "" and clocks then
    local id, version, vjson = bump(clocks, w)
    if id then
      vjson = vjson or string.gsub(version, "([^,=]+)=", '"%1":')
      redis.call("HSET", kd, "s:" .. id, tail,
        "clocks", id .. "|" .. w .. "|" .. version, "etag", etag, "exp", exp)
      if idem then redis.call("HSET", kd, "idem", idem) end
      settle(kd, ki, key, exp, old, oldexp, xi, ns)
      return "ok", etag, version, "1", "1", expired, vjson
    end
  end

  local new = parse(ctx)
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
  local version, vjson = table.concat(text, ","), table.concat(json, ",")

  local keep, gone, others = {}, {}, {}
  for _, s in ipairs(sibs) do
    if dominated(s.v, new) then
      gone[#gone + 1] = s.id
    else
      keep[#keep + 1] = s.entry
      others[#others + 1] = "s:" .. s.id
    end
  end
  -- The new sibling takes the field of one it supersedes (the common
  -- case: a writer replacing its own value), else a new id.
  local id, seq = table.remove(gone), nil
  if not id then
    seq = string.format("%d", (tonumber(redis.call("HGET", kd, "seq")) or 0) + 1)
    id = seq
  end
  if #gone > 0 then
    for i, g in ipairs(gone) do gone[i] = "s:" .. g end
    redis.call("HDEL", kd, unpack(gone))
  end

  keep[#keep + 1] = id .. "|" .. w .. "|" .. version
  local kept = table.concat(keep, ";")
  if seq then
    redis.call("HSET", kd, "s:" .. id, tail, "clocks", kept, "etag", etag, "exp", exp, "seq", seq)
  else
    redis.call("HSET", kd, "s:" .. id, tail, "clocks", kept, "etag", etag, "exp", exp)
  end
  if idem then redis.call("HSET", kd, "idem", idem) end
  settle(kd, ki, key, exp, old, oldexp, xi, ns)

  local blobs
  if #others > 0 then blobs = redis.call("HMGET", kd, unpack(others)) end
  return "ok", etag, version, string.format("%d", #keep), string.format("%d", #sibs + 1 - #keep),
    expired, vjson, blobs, kept
end

local function reply(st, etag, version, sibs, sup, expired, vjson, blobs, kept)
  if st ~= "ok" then return {st .. " " .. etag} end
  local r = {"ok " .. version .. " " .. sibs .. " " .. sup .. " " .. expired .. " 0"}
  if blobs then
    r[2] = kept
    for _, b in ipairs(blobs) do r[#r + 1] = b end
  end
  return r
end

local function del(kd, ki, key, ifm, ns)
  -- An idempotent delete passes its idempotency argument after ifm and a
  -- newline, as a put does.
  local idem
  local nl = string.find(ifm, "\n", 1, true)
  if nl then idem, ifm = string.sub(ifm, nl + 1), string.sub(ifm, 1, nl - 1) end
  flush()
  -- A delete the key remembers (one of its latest with an idempotency
  -- key) was applied: not again, though the key may exist again since.
  local kr, done = kd .. "#deleted", nil
  if idem then
    done = redis.call("GET", kr)
    local id, digest = string.match(idem, "^(%S+) (%S+)$")
    local at = done and string.find(";" .. done, ";" .. id .. " ", 1, true)
    if at then
      -- "id digest", or "id digest absent" for a delete that found nothing
      local d, outcome = string.match(done, "^%S+ ([^;%s]+)([^;]*)", at)
      if d ~= digest then return -2 end
      if outcome == " absent" then return 4 end
      return 2
    end
  end
  local etag = redis.call("HGET", kd, "etag")
  if not etag then
    redis.call("ZREM", ki, key)
    -- Answered 404, and so it is again when sent again, even after the
    -- key was created meanwhile.
    if idem then redis.call("SET", kr, remember(done, idem .. " absent"), "PX", 86400000) end -- DeleteIdempotencyKeep
    return 0
  end
  if ifm ~= "" and ifm ~= "*" and etag ~= ifm then return -1 end
  redis.call("DEL", kd)
  redis.call("ZREM", ki, key)
  if idem then redis.call("SET", kr, remember(done, idem), "PX", 86400000) end -- DeleteIdempotencyKeep
  if ownParents and redis.call("EXISTS", ki) == 0 then
    dropParents(ns, key)
    -- A create later in this call must raise what was just dropped.
    raisedParents = {}
  end
  return 1
end
`

// logLib is the Lua that logs and publishes change events, shared by
// commitScript and publishScript.
const logLib = `
-- appendLog appends n events, numbered from first, to the stream log and
-- publishes pub on channel. The events' texts are the elements of the
-- table elems: event k is elems[starts[k]] up to the element before
-- starts[k + 1] (starts has n + 1 entries), concatenated. An event's first
-- element starts with "{", the others with something else: a put's
-- envelope tail, passed in as it is, starts with ","; the pieces of
-- commitScript's fast path with a digit, "," or "}". The log gets an entry
-- "0-<id of its first event>" per 2,000 elements at most (a Lua unpack
-- takes a few thousand values at most), whose field-value list is those
-- elements in order, padded with "" to an even count: Lua joins no text for
-- the log, which would cost Redis more than the XADD (every string Lua
-- makes is hashed whole). The first entry trims the log to about loglen
-- events.
local function appendLog(log, channel, loglen, first, elems, starts, n, pub)
  local k = 1
  while k <= n do
    local i, e = starts[k], k
    while e < n and starts[e + 2] - i <= 2000 do e = e + 1 end
    local j = starts[e + 1] - 1
    local padded, after = (j - i) % 2 == 0, elems[j + 1]
    if padded then
      j = j + 1
      elems[j] = ""
    end
    local id = "0-" .. string.format("%d", first + k - 1)
    if k == 1 and first > loglen then
      redis.call("XADD", log, "MINID", "~", "0-" .. string.format("%d", first - loglen), id, unpack(elems, i, j))
    else
      redis.call("XADD", log, id, unpack(elems, i, j))
    end
    if padded then elems[j] = after end
    k = e + 1
  end
  redis.call("PUBLISH", channel, pub)
end

-- logEvents gives events (each an event's JSON after its id: '"type":…}')
-- consecutive ids from counter, then logs and publishes them (appendLog):
-- as they are, a line each, or as a brief message when brief (its lines)
-- is not "". It returns the first id.
local function logEvents(counter, log, channel, loglen, events, brief)
  local n = #events
  local last = redis.call("INCRBY", counter, n)
  local first = last - n + 1
  for i, e in ipairs(events) do
    events[i] = '{"id":' .. string.format("%d", first + i - 1) .. ',' .. e
  end
  local pub
  if brief ~= "" then
    pub = "#" .. string.format("%d", first) .. "\n" .. brief
  else
    pub = table.concat(events, "\n")
  end
  local starts = {}
  for k = 1, n + 1 do starts[k] = k end
  appendLog(log, channel, loglen, first, events, starts, n, pub)
  return first
end

`

// putScript runs one put of writeLib.
//
// KEYS[1] the data hash; KEYS[2] the subtree index (same hash slot)
// ARGV[1…8] put's key, w, ctx, tail, exp, ifm, inm, etag
// ARGV[9] the namespace, on a single Redis only (ownParents); absent on
// Cluster
//
// Returns put's reply, packed by reply.
var putScript = redis.NewScript("local ownParents = ARGV[9] ~= nil\n" + writeLib + `
local st, etag, version, sibs, sup, expired, vjson, blobs, kept =
  put(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], nil, ARGV[9])
flush()
return reply(st, etag, version, sibs, sup, expired, vjson, blobs, kept)
`)

// deleteScript runs one del of writeLib.
//
// KEYS[1] the data hash; KEYS[2] the subtree index; KEYS[3] the data
// hash's "#deleted" key, which del derives (named here to declare it)
// ARGV[1] the key (index member)
// ARGV[2] del's ifm: If-Match etag, "*" for any existing state, "" for
// none; then a newline and the idempotency argument, if any
// ARGV[3] the namespace, on a single Redis only (ownParents: del takes
// what the delete leaves empty out of the listing indexes); absent on
// Cluster
//
// Returns del's reply; on Cluster 3 rather than 1 when the delete left
// its subtree index empty, so that the caller marks the listing entry
// above it for Tidy (see markEmptied).
var deleteScript = redis.NewScript("local ownParents = ARGV[3] ~= nil\n" + writeLib + `
local r = del(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if r == 1 and not ownParents and redis.call("EXISTS", KEYS[2]) == 0 then return 3 end
return r
`)

// commitScript runs a sequence of writes and logs and publishes their change
// events, all in one call: one round trip, and one script invocation, for a
// whole group commit or batch. Its keys span hash slots, so it serves a
// single Redis (or Sentinel) only; on Cluster each write runs alone and
// publishScript follows (see Store.oneScript).
//
// KEYS[1] the event counter; KEYS[2] the event log stream; KEYS[3] the
// expiry index; KEYS[2i+2], KEYS[2i+3] the data hash and subtree index of
// write i (from 1)
// ARGV[1] the channel; ARGV[2] the log's approximate maximum length;
// ARGV[3] the largest value a put event carries (a larger one stays out of
// the event); ARGV[4] the longest text of several events published as it
// is (a longer one goes out brief, see ParseMessage); then commitStride
// arguments per write, from ARGV[5]:
//
//	kind   "put" or "delete"
//	key, w, ctx, tail, exp   as for put; a delete passes its event's
//	       timestamp as tail, and "" for the others
//	cond   put's ifm, prefixed by "!" for inm (a delete's ifm, as del takes it)
//	etag   as for put
//	ns     the namespace
//
// Each argument costs Redis about 0.1 µs to hand to Lua, so what the script
// can derive is not passed: an event's head and the expiry index member
// come from ns and key (neither needs JSON escaping), the timestamp of an
// expiry a put finds from its tail.
//
// Returns one text, a line per write, in order: a put's
// "ok version siblings superseded expired event" (the etag is the one
// passed), followed, when siblings > 1, by a line with the clocks field
// put wrote and a line per other sibling's stored envelope (siblings - 1
// of them, in the order of that field's entries; envelopes are compact
// JSON, without newlines), or "precondition_failed etag"; a delete's
// "del <del's reply> <event id, 0 when nothing was deleted>". One string
// rather than a reply per write: Redis and the client each handle one
// value. Events are logged and published as publishScript does, in the
// order of the writes; a put that finds its key expired but not yet swept
// announces the expiry first.
var commitScript = redis.NewScript(logLib + commitHead + writeLib + commitRest)

// commitHead starts commitScript: its state, and the fast path.
//
// The fast path applies the commonest write at a fraction of the general
// path's cost: a put without context or condition by the writer of the
// key's only sibling, whose clock counts that writer alone, at the same or
// a later expiry, with a value small enough for its event. It does what
// put and settle would, and logs and answers the same texts, but it reads
// no argument it does not need, builds an event from pieces rather than
// joining them (appendLog and the reply take pieces), and runs before the
// write library's functions exist: defining them costs every call more
// than a fast write does. The writes go through it in order until one
// does not qualify; that one and the rest take the general path. A write
// that does not qualify has changed nothing when it falls through.
const commitHead = `
-- A single Redis: the listing indexes are this script's to keep (writeLib).
local ownParents = true
local stride = 9
local n = (#ARGV - 4) / stride
local limit, briefAbove = tonumber(ARGV[3]), tonumber(ARGV[4])
-- Events are numbered as they are built, from the counter's value; the
-- counter is set past them at the end (one call instead of a renumbering).
local base = tonumber(redis.call("GET", KEYS[1]) or "0")
local nev = 0
-- The replies, a line per write (and after a put's, a line per other
-- sibling's envelope), built as pieces too.
local rep, nr = {}, 0
-- The events' texts, as appendLog takes them (elems, starts), and their
-- brief message's lines as pieces (below), joined only if it is sent.
local elems, starts, ne, size, brief, nb = {}, {}, 0, 0, {}, 0
-- join concatenates the first n pieces of t, a thousand at a time: the
-- embedded Redis's Lua (gopher-lua) concatenates on a bounded stack.
local function join(t, n)
  if n <= 1000 then return table.concat(t, "", 1, n) end
  local parts = {}
  for i = 1, n, 1000 do parts[#parts + 1] = table.concat(t, "", i, math.min(i + 999, n)) end
  return table.concat(parts)
end

local fast = 1
while fast <= n do
  local a = 4 + (fast - 1) * stride
  local tail = ARGV[a + 5]
  if ARGV[a + 1] ~= "put" or ARGV[a + 4] ~= "" or ARGV[a + 7] ~= "" or #tail > limit then break end
  local kd = KEYS[2 * fast + 2]
  local cur = redis.call("HMGET", kd, "clocks", "exp")
  local clocks, oldexp = cur[1], cur[2]
  if not clocks or not oldexp then break end
  local w, exp = ARGV[a + 3], ARGV[a + 6]
  local id, sw, cw, c = string.match(clocks, "^([^|;]+)|([^|;]+)|([^,=;|]+)=(%d+)$")
  if sw ~= w or cw ~= w then break end
  -- As settle: the same expiry changes nothing, a later one only the TTL.
  local moved = exp ~= oldexp
  if moved and not (oldexp ~= "0" and exp ~= "0" and (#exp > #oldexp or #exp == #oldexp and exp > oldexp)) then
    break
  end
  local m = string.format("%d", tonumber(c) + 1)
  redis.call("HSET", kd, "s:" .. id, tail, "clocks", id .. "|" .. w .. "|" .. w .. "=" .. m,
    "etag", ARGV[a + 8], "exp", exp)
  if moved then redis.call("PEXPIREAT", kd, exp) end

  local ns, key = ARGV[a + 9], ARGV[a + 2]
  nev = nev + 1
  local eid = string.format("%d", base + nev)
  local head = ',"type":"put","namespace":"' .. ns .. '","key":"' .. key .. '","version":{"' .. w .. '":'
  starts[nev] = ne + 1
  elems[ne + 1], elems[ne + 2], elems[ne + 3], elems[ne + 4], elems[ne + 5], elems[ne + 6] =
    '{"id":', eid, head, m, "}", tail
  ne = ne + 6
  size = size + #head + #tail + 16
  if nb > 0 then
    brief[nb + 1] = "\n"
    nb = nb + 1
  end
  brief[nb + 1], brief[nb + 2], brief[nb + 3], brief[nb + 4], brief[nb + 5] = "put", " ", ns, " ", key
  nb = nb + 5
  if nr > 0 then
    rep[nr + 1] = "\n"
    nr = nr + 1
  end
  rep[nr + 1], rep[nr + 2], rep[nr + 3], rep[nr + 4], rep[nr + 5], rep[nr + 6] = "ok ", w, "=", m, " 1 1 0 ", eid
  nr = nr + 6
  fast = fast + 1
end

if fast <= n then
`

// commitRest ends commitScript: the general path, inside the block that
// commitHead opened and writeLib filled, then the log and the reply.
const commitRest = `
local function line(a, b, c, d)
  if nr > 0 then
    rep[nr + 1] = "\n"
    nr = nr + 1
  end
  rep[nr + 1], rep[nr + 2], rep[nr + 3], rep[nr + 4] = a, b, c, d
  nr = nr + 4
end
-- event numbers the next event, of type typ on ns/key, adds it to the
-- brief's lines and returns its id. The caller makes the event's text in
-- one concatenation (Lua hashes every string it makes, whole) and passes
-- it to logged.
local function event(typ, ns, key)
  nev = nev + 1
  local id = string.format("%d", base + nev)
  if nb > 0 then
    brief[nb + 1] = "\n"
    nb = nb + 1
  end
  brief[nb + 1], brief[nb + 2], brief[nb + 3], brief[nb + 4], brief[nb + 5] = typ, " ", ns, " ", key
  nb = nb + 5
  return id
end
-- logged records the text of the event just numbered: e, then a put's
-- envelope tail as an element of its own (see appendLog).
local function logged(e, tail)
  starts[nev] = ne + 1
  elems[ne + 1] = e
  ne = ne + 1
  size = size + #e + 1
  if tail then
    elems[ne + 1] = tail
    ne = ne + 1
    size = size + #tail
  end
end
for i = fast, n do
  local a = 4 + (i - 1) * stride
  local kd, ki = KEYS[2 * i + 2], KEYS[2 * i + 3]
  local key, tail, cond, ns = ARGV[a + 2], ARGV[a + 5], ARGV[a + 7], ARGV[a + 9]
  if ARGV[a + 1] == "put" then
    local ifm, inm = cond, ""
    if string.byte(cond) == 33 then ifm, inm = string.sub(cond, 2), "1" end -- "!"
    local st, etag, version, sibs, sup, expired, vjson, blobs, kept = put(kd, ki, key, ARGV[a + 3], ARGV[a + 4],
      tail, ARGV[a + 6], ifm, inm, ARGV[a + 8], KEYS[3], ns)
    if st == "ok" then
      if expired == "1" then
        local id = event("expire", ns, key)
        logged('{"id":' .. id .. ',"type":"expire","namespace":"' .. ns .. '","key":"' .. key ..
          '","timestamp":' .. string.match(tail, '^,"timestamp":(%d+)') .. "}")
      end
      local etail = tail
      if #tail > limit then
        local p = string.find(tail, ',"value":', 1, true)
        if #tail - p - 9 > limit then etail = string.sub(tail, 1, p - 1) .. "}" end
      end
      local id = event("put", ns, key)
      logged('{"id":' .. id .. ',"type":"put","namespace":"' .. ns .. '","key":"' .. key ..
        '","version":{' .. vjson .. "}", etail)
      line("ok ", version, " ", sibs)
      rep[nr + 1], rep[nr + 2], rep[nr + 3], rep[nr + 4] = " ", sup, " ", expired
      rep[nr + 5], rep[nr + 6] = " ", id
      nr = nr + 6
      if blobs then
        line(kept, "", "", "")
        for _, blob in ipairs(blobs) do line(blob, "", "", "") end
      end
    else
      line(st, " ", etag, "")
    end
  else
    local r = del(kd, ki, key, cond, ns)
    local id = "0"
    if r == 1 then
      id = event("delete", ns, key)
      logged('{"id":' .. id .. ',"type":"delete","namespace":"' .. ns .. '","key":"' .. key ..
        '","timestamp":' .. tail .. "}")
    end
    line("del ", string.format("%d", r), " ", id)
  end
end
flush()
end

if nev > 0 then
  redis.call("SET", KEYS[1], string.format("%d", base + nev))
  local pub
  if nev > 1 and size > briefAbove then
    -- Too much for one message: Redis writes a subscriber at most 64 KiB
    -- per turn of its event loop, so big batches from several clients
    -- would pile up in its output buffer until Redis cut it off. Say only
    -- which keys changed; the log has the events.
    pub = "#" .. string.format("%d", base + 1) .. "\n" .. join(brief, nb)
  else
    -- The events a line each: at most a few hundred.
    local p = {}
    for k = 1, nev do
      if k > 1 then p[#p + 1] = "\n" end
      for e = starts[k], (starts[k + 1] or ne + 1) - 1 do p[#p + 1] = elems[e] end
    end
    pub = table.concat(p)
  end
  starts[nev + 1] = ne + 1
  appendLog(KEYS[2], ARGV[1], tonumber(ARGV[2]), base + 1, elems, starts, nev, pub)
end
return join(rep, nr)
`

// sweepScript decides whether a key the expiry index lists has expired, and
// if so claims the announcement: the subtree index entry is removed
// atomically, so of several instances sweeping at once exactly one gets
// "expired". A key whose index score came due but which a write has since
// given a later expiry (settle leaves scores low) gets its subtree index
// score raised to that expiry here. An expiry that leaves the subtree
// empty takes it out of the listing indexes on a single Redis
// (dropParents), as a delete does: an entry above a key that once had no
// expiry is scored +inf, and Tidy would never see it in the past.
//
// KEYS[1] the data hash; KEYS[2] the subtree index
// ARGV[1] the key; ARGV[2] now, Unix ms; ARGV[3] the namespace, on a
// single Redis only (ownParents); absent on Cluster
//
// Returns {"gone"} when the index no longer lists the key (deleted, or
// already announced); {"live", score} when it was written again and now
// expires at score ("inf": never); {"wait"} when the key's own expiry has
// passed but Redis still has the data (clock skew: try again later);
// {"expired"} when this caller must announce the expiry, {"expired",
// "emptied"} on Cluster when the subtree index is left empty (the caller
// marks the entry above it, see markEmptied).
var sweepScript = redis.NewScript("local ownParents = ARGV[3] ~= nil\n" + dropParentsLib + `
local score = redis.call("ZSCORE", KEYS[2], ARGV[1])
if not score then return {"gone"} end
if score == "inf" or tonumber(score) > tonumber(ARGV[2]) then return {"live", score} end
local exp = redis.call("HGET", KEYS[1], "exp")
if exp == "0" then
  redis.call("ZADD", KEYS[2], "+inf", ARGV[1])
  return {"live", "inf"}
elseif exp and tonumber(exp) > tonumber(ARGV[2]) then
  redis.call("ZADD", KEYS[2], exp, ARGV[1])
  return {"live", exp}
elseif exp then
  return {"wait"}
end
redis.call("ZREM", KEYS[2], ARGV[1])
if redis.call("EXISTS", KEYS[2]) == 0 then
  if not ownParents then return {"expired", "emptied"} end
  dropParents(ARGV[3], ARGV[1])
end
return {"expired"}
`)

// unlistStrayNamesScript removes names from a names index whose child is
// not in the children index, checked at that moment: a write that has
// added the child since keeps its name.
//
// KEYS[1] the children index; KEYS[2] its names index (same hash slot)
// ARGV[1…] the names
//
// Returns how many it removed.
var unlistStrayNamesScript = redis.NewScript(`
local n = 0
for i = 1, #ARGV do
  if not redis.call("ZSCORE", KEYS[1], ARGV[i]) then
    n = n + redis.call("ZREM", KEYS[2], ARGV[i])
  end
end
return n
`)

// unlistPastScript removes members of a sorted set while their score is at
// most a cutoff (in the past), so that a member a write has just raised
// into the future survives a sweep or a tidying that read the old score:
// entries of the expiry index, and stale ones of the listing indexes.
//
// KEYS[1] the sorted set; KEYS[2], when given, a set in the same hash slot
// that lists its members too (a children index's names index), from which
// they are removed with them
// ARGV[1] the cutoff (a number); ARGV[2…] the members
//
// Returns how many it removed.
var unlistPastScript = redis.NewScript(`
local cutoff, n = tonumber(ARGV[1]), 0
for i = 2, #ARGV do
  local s = redis.call("ZSCORE", KEYS[1], ARGV[i])
  if s and s ~= "inf" and tonumber(s) <= cutoff then
    n = n + redis.call("ZREM", KEYS[1], ARGV[i])
    if KEYS[2] then redis.call("ZREM", KEYS[2], ARGV[i]) end
  end
end
return n
`)

// nodeNowLib defines nodeNow, the time of the Redis node that runs the
// script, in Unix ms: marks are scored, and judged due, by the clock of
// the node that holds them, so that no instance's clock counts (see
// markEmptied).
const nodeNowLib = `
local function nodeNow()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// markScript marks members of a listing index for Tidy (see markEmptied),
// at its node's time. A member marked already keeps its earlier mark: no
// raise took it away since.
//
// KEYS[1] the marks set
// ARGV[1…] the members (a few hundred at most: Lua's unpack is bounded)
//
// Returns how many it marked.
var markScript = redis.NewScript(nodeNowLib + `
local at, args = string.format("%d", nodeNow()), {}
for i = 1, #ARGV do
  args[2 * i - 1], args[2 * i] = at, ARGV[i]
end
return redis.call("ZADD", KEYS[1], "NX", unpack(args))
`)

// dueMarksScript reads the marks that are more than a margin old by its
// node's clock.
//
// KEYS[1] the marks set
// ARGV[1] the margin (ms); ARGV[2] how many to read at most
//
// Returns the marked members, oldest first.
var dueMarksScript = redis.NewScript(nodeNowLib + `
return redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", string.format("%d", nodeNow() - tonumber(ARGV[1])), "LIMIT", 0, ARGV[2])
`)

// unlistMarkedScript removes members of a listing index whose marks (see
// markEmptied) are more than a margin old by its node's clock, with their
// marks: a member whose mark a raise has taken away since Tidy read it
// stays listed.
//
// KEYS[1] the index; KEYS[2] its marks set (same hash slot); KEYS[3], when
// given, a set in the same hash slot that lists the index's members too
// (a children index's names index), from which they are removed with them
// ARGV[1] the margin (ms); ARGV[2] e; ARGV[3…] the members: the first
// e to remove, under which nothing is left, then members whose marks only
// go (something is below them again)
//
// Returns {how many it removed from the index, how many marks went}.
var unlistMarkedScript = redis.NewScript(nodeNowLib + `
local cutoff, e, n, m = nodeNow() - tonumber(ARGV[1]), tonumber(ARGV[2]), 0, 0
for i = 3, #ARGV do
  local s = redis.call("ZSCORE", KEYS[2], ARGV[i])
  if s and tonumber(s) <= cutoff then
    m = m + redis.call("ZREM", KEYS[2], ARGV[i])
    if i - 2 <= e then
      n = n + redis.call("ZREM", KEYS[1], ARGV[i])
      if KEYS[3] then redis.call("ZREM", KEYS[3], ARGV[i]) end
    end
  end
end
return {n, m}
`)

// dropEmptyScript takes a subtree out of the listing indexes when it has
// no key, on a single Redis: after writes that raised its entries and then
// created nothing (Store.unraise).
//
// KEYS[1] the subtree index
// ARGV[1] the namespace; ARGV[2] a key of the subtree
//
// Returns 1 when the subtree was empty, else 0.
var dropEmptyScript = redis.NewScript(dropParentsLib + `
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
dropParents(ARGV[1], ARGV[2])
return 1
`)
