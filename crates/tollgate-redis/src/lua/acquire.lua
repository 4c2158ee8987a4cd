-- Admits one request against every limit of one quota, atomically (GCRA).
-- KEYS[1]: the quota's pause key. KEYS[2..]: one bucket key per limit, holding its theoretical
-- arrival time (microseconds of Redis's clock, TIME).
-- ARGV, three per limit: emission interval (microseconds per unit, may be fractional),
-- tolerance (microseconds), cost (units).
-- Returns {1, 0, 0} when admitted, {0, wait in microseconds, limit index (0: paused)} when not;
-- a refusal takes nothing from any limit.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = redis.call('PTTL', KEYS[1])
if paused > 0 then
  return {0, paused * 1000, 0}
end
local wait, which = 0, 0
local tats = {}
for i = 2, #KEYS do
  local j = (i - 2) * 3
  local interval = tonumber(ARGV[j + 1])
  local tolerance = tonumber(ARGV[j + 2])
  local cost = tonumber(ARGV[j + 3])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then
    tat = now
  end
  local after = tat + cost * interval
  local missing = after - now - tolerance
  if missing > wait then
    wait, which = missing, i - 1
  end
  tats[i] = math.ceil(after)
end
if wait > 0 then
  return {0, math.ceil(wait), which}
end
for i = 2, #KEYS do
  -- The key expires when its bucket is full again: a missing key is a full bucket.
  local ttl = math.max(1, math.ceil((tats[i] - now) / 1000))
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl)
end
return {1, 0, 0}
