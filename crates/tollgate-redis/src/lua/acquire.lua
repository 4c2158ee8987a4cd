-- Admits one request against every limit of one quota, atomically (GCRA buckets and daily
-- counts).
-- ARGV[1]: n, the number of buckets; ARGV[2]: d, the number of daily counts; ARGV[3]: when the
-- day starts, in seconds after midnight UTC. Then four per bucket: emission interval
-- (microseconds per unit, may be fractional), tolerance (microseconds), cost (units), and 1 when
-- the charge is held for settling; then two per daily count: allowance, cost.
-- KEYS[1]: the quota's pause key; KEYS[2 .. n+1]: one key per bucket, holding its theoretical
-- arrival time (microseconds of Redis's clock, TIME); KEYS[n+2 .. 2n+1]: what refunds have
-- moved each bucket's schedule (see settle.lua); KEYS[2n+2 ..]: one hash per daily count
-- (fields `day` and `used`).
-- Returns {1, 0, 0, day, end_1, refunded_1, ...} when admitted (end: the bucket's arrival time
-- after this charge; day: today's number), {0, wait in microseconds, limit index} when not
-- (index 0: paused, 1..n: a bucket, n+1..n+d: a daily count, whose wait is until the reset).
-- A refusal takes nothing from any limit.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n, d = tonumber(ARGV[1]), tonumber(ARGV[2])
local starts = tonumber(ARGV[3])
local paused = redis.call('PTTL', KEYS[1])
if paused > 0 then
  return {0, paused * 1000, 0}
end
local seconds = math.floor(now / 1000000) - starts
local day = math.floor(seconds / 86400)
local reset = ((day + 1) * 86400 + starts) * 1000000 - now
for i = 1, d do
  local allowance = tonumber(ARGV[3 + 4 * n + 2 * i - 1])
  local cost = tonumber(ARGV[3 + 4 * n + 2 * i])
  local key = KEYS[1 + 2 * n + i]
  local used = 0
  if tonumber(redis.call('HGET', key, 'day')) == day then
    used = tonumber(redis.call('HGET', key, 'used')) or 0
  end
  if used + cost > allowance then
    return {0, math.ceil(reset), n + i}
  end
end
local wait, which = 0, 0
local tats = {}
for i = 1, n do
  local j = 3 + (i - 1) * 4
  local interval = tonumber(ARGV[j + 1])
  local tolerance = tonumber(ARGV[j + 2])
  local cost = tonumber(ARGV[j + 3])
  local tat = tonumber(redis.call('GET', KEYS[1 + i])) or now
  if tat < now then
    tat = now
  end
  local after = tat + cost * interval
  local missing = after - now - tolerance
  if missing > wait then
    wait, which = missing, i
  end
  tats[i] = math.ceil(after)
end
if wait > 0 then
  return {0, math.ceil(wait), which}
end
local answer = {1, 0, 0, day}
for i = 1, n do
  -- The key expires when its bucket is full again: a missing key is a full bucket, and with it
  -- goes the record of refunds (every stretch it knew of is then in the past).
  local ttl = math.max(1, math.ceil((tats[i] - now) / 1000))
  redis.call('SET', KEYS[1 + i], string.format('%.0f', tats[i]), 'PX', ttl)
  local refunded = 0
  if tonumber(ARGV[3 + (i - 1) * 4 + 4]) == 1 then
    refunded = tonumber(redis.call('GET', KEYS[1 + n + i])) or 0
    if refunded > 0 then
      redis.call('PEXPIRE', KEYS[1 + n + i], ttl)
    end
  end
  answer[#answer + 1] = tats[i]
  answer[#answer + 1] = refunded
end
for i = 1, d do
  local cost = tonumber(ARGV[3 + 4 * n + 2 * i])
  local key = KEYS[1 + 2 * n + i]
  if tonumber(redis.call('HGET', key, 'day')) ~= day then
    redis.call('HSET', key, 'day', day, 'used', 0)
  end
  redis.call('HINCRBY', key, 'used', cost)
  redis.call('PEXPIREAT', key, math.ceil(((day + 1) * 86400 + starts) * 1000) + 60000)
end
return answer
