-- Corrects a charge that acquire.lua took and held to what the request really used.
-- KEYS[1]: the bucket's arrival time key; KEYS[2]: its refunds key.
-- ARGV: emission interval (microseconds per unit), capacity, amount held, amount used, the
-- bucket's arrival time after the charge (`end`), its refunds then.
-- Excess usage is charged, never past an empty bucket. An unused part is given back only where
-- it is still ahead of now on the schedule: the part behind has been refilled already. Refunds
-- move later stretches earlier, so a hold's stretch has moved at most by the refunds since.
-- Returns the correction in units (negative: given back).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local used = tonumber(ARGV[4])
local stretch_end = tonumber(ARGV[5])
local refunded_then = tonumber(ARGV[6])
local tat = tonumber(redis.call('GET', KEYS[1]))
if used > amount then
  local base = tat or now
  if base < now then
    base = now
  end
  local after = math.min(base + (used - amount) * interval, now + capacity * interval)
  if after > base then
    redis.call('SET', KEYS[1], string.format('%.0f', math.ceil(after)), 'PX', math.max(1, math.ceil((after - now) / 1000)))
    return math.floor((after - base) / interval)
  end
  return 0
end
if not tat or tat <= now then
  return 0
end
local refunded = tonumber(redis.call('GET', KEYS[2])) or 0
local shift = math.max(0, refunded - refunded_then)
local ahead = math.min(stretch_end - shift - now, tat - now)
if ahead <= 0 then
  return 0
end
local units = math.floor(math.min((amount - used) * interval, ahead) / interval)
if units <= 0 then
  return 0
end
local refund = units * interval
tat = tat - refund
local ttl = math.max(1, math.ceil((tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
redis.call('SET', KEYS[2], string.format('%.0f', refunded + refund), 'PX', ttl)
return -units
