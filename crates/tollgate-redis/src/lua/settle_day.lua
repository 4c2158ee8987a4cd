-- Corrects a daily token count to what a request really used, if it is still the same day.
-- KEYS[1]: the daily count's hash. ARGV: the day the charge was taken, amount, used.
local key = KEYS[1]
if tonumber(redis.call('HGET', key, 'day')) ~= tonumber(ARGV[1]) then
  return 0
end
local used = tonumber(redis.call('HGET', key, 'used')) or 0
local corrected = math.max(0, used - tonumber(ARGV[2]) + tonumber(ARGV[3]))
redis.call('HSET', key, 'used', corrected)
return corrected - used
