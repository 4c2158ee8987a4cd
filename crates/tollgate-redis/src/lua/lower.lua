-- Lowers what a bucket holds to what the provider says remains; never raises it.
-- KEYS[1]: the bucket key. ARGV: emission interval (microseconds per unit), capacity, remaining.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local remaining = math.min(tonumber(ARGV[3]), capacity)
local tat = math.ceil(now + (capacity - remaining) * interval)
local current = tonumber(redis.call('GET', KEYS[1])) or now
if tat > current then
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
  return 1
end
return 0
