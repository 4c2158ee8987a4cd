-- Pauses every admission of a quota. KEYS[1]: the pause key. ARGV[1]: milliseconds.
-- Never shortens a pause already set.
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
end
return 1
