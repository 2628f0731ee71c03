// Package quota shares per-token usage between the instances of one
// memsync deployment, so that a token's limits (requests per second, open
// watch streams) hold across instances rather than per instance.
//
// Every instance limits in process, with no Redis call on the request path,
// and reports its own usage of each token to a table in Redis about once a
// second (Table.Share), which answers with what the other instances
// reported. From that an instance takes its share of each token's rate in
// proportion to its share of the token's demand, and counts the others'
// watch streams against the token's maximum. The limits so hold to within
// about one reporting interval: instances that see a token's first requests
// at the same moment each admit its burst until they next report.
package quota

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
)

// Usage is one instance's use of one token, or the sum of several
// instances' uses.
type Usage struct {
	Rate     float64 // requests per second tried (admitted or refused)
	Watchers int     // watch streams open
}

// Table is the usage table in Redis, seen from one instance.
type Table struct {
	rdb      redis.UniversalClient
	key      string
	instance string
	stale    time.Duration
}

// New returns the table as instance (an id unique to this process) sees it.
// A report older than stale (the instance stopped reporting: it died, or
// no longer uses the token) no longer counts, and is removed.
func New(rdb redis.UniversalClient, instance string, stale time.Duration) *Table {
	return &Table{rdb: rdb, key: keys.Global("quota"), instance: instance, stale: stale}
}

// shareScript records one instance's usage and returns every other
// instance's, summed by token.
//
// KEYS[1] the table, a hash: field "<token>|<instance>", value
// "<rate> <watchers> <Unix ms of the report>"
// ARGV[1] this instance; ARGV[2] the staleness bound, ms; then pairs of
// token and "<rate> <watchers>": this instance's usage of each token it
// used since its last report
//
// Every report of this instance not renewed by this call is removed (it no
// longer uses that token), and every report of any instance older than the
// bound. The time is Redis's (TIME), so that instances' clocks need not
// agree.
//
// Returns a flat list of token, rate sum, watchers sum for every token that
// other instances reported (sums as decimal texts).
var shareScript = redis.NewScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, stale = ARGV[1], tonumber(ARGV[2])
local mine = {}
local args = {}
for i = 3, #ARGV, 2 do
  local field = ARGV[i] .. "|" .. me
  mine[field] = true
  args[#args + 1] = field
  args[#args + 1] = ARGV[i + 1] .. " " .. now
end
if #args > 0 then redis.call("HSET", KEYS[1], unpack(args)) end
local all = redis.call("HGETALL", KEYS[1])
local rate, watchers, order, gone = {}, {}, {}, {}
for i = 1, #all, 2 do
  local field, value = all[i], all[i + 1]
  local token, inst = string.match(field, "^(.*)|([^|]*)$")
  local r, w, at = string.match(value, "^(%S+) (%S+) (%S+)$")
  if not token or not at or now - tonumber(at) > stale or (inst == me and not mine[field]) then
    gone[#gone + 1] = field
  elseif inst ~= me then
    if not rate[token] then
      order[#order + 1] = token
      rate[token], watchers[token] = 0, 0
    end
    rate[token] = rate[token] + tonumber(r)
    watchers[token] = watchers[token] + tonumber(w)
  end
end
for i = 1, #gone, 1000 do
  redis.call("HDEL", KEYS[1], unpack(gone, i, math.min(i + 999, #gone)))
end
local out = {}
for _, token in ipairs(order) do
  out[#out + 1] = token
  out[#out + 1] = string.format("%.17g", rate[token])
  out[#out + 1] = string.format("%d", watchers[token])
end
return out
`)

// Share records this instance's usage (by token id, which must not
// contain '|') and returns the other instances' usage of every token they
// reported, summed.
func (t *Table) Share(ctx context.Context, mine map[string]Usage) (map[string]Usage, error) {
	args := make([]any, 0, 2+2*len(mine))
	args = append(args, t.instance, t.stale.Milliseconds())
	for token, u := range mine {
		args = append(args, token, strconv.FormatFloat(u.Rate, 'g', -1, 64)+" "+strconv.Itoa(u.Watchers))
	}
	reply, err := shareScript.Run(ctx, t.rdb, []string{t.key}, args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("quota: share usage: %w", err)
	}
	others := make(map[string]Usage, len(reply)/3)
	for i := 0; i+2 < len(reply); i += 3 {
		rate, err1 := strconv.ParseFloat(reply[i+1], 64)
		watchers, err2 := strconv.Atoi(reply[i+2])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("quota: unexpected reply %q", reply[i:i+3])
		}
		others[reply[i]] = Usage{Rate: rate, Watchers: watchers}
	}
	return others, nil
}
