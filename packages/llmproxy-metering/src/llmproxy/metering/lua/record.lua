-- Record one usage event, at most once per event id (see the package README, "Redis keys").
-- KEYS[1] the hour's hash   metering:{<tenant>}:<yyyy-MM-dd-HH>
-- KEYS[2] its dedupe set    metering:{<tenant>}:<yyyy-MM-dd-HH>:seen
-- KEYS[3] the tenant index  metering:{<tenant>}:dirty
-- ARGV[1] event id, ARGV[2] hour label, ARGV[3] hash expiry (unix s), ARGV[4] dedupe set expiry (unix s),
-- ARGV[5] index lifetime (ms), ARGV[6..] field, increment, field, increment, ...
-- Returns 1 when counted, 0 when the event id was already counted in that hour.
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then
  return 0
end
local fresh = redis.call('EXISTS', KEYS[1]) == 0
for i = 6, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
-- Redis's clock, not the caller's: the flusher compares these scores with Redis TIME.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[3], now, ARGV[2])
if fresh then
  -- An hour's expiry is fixed (the end of the hour plus the TTL), so it is set once, when the hash is born.
  redis.call('EXPIREAT', KEYS[1], ARGV[3])
  redis.call('EXPIREAT', KEYS[2], ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[5]))
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
return 1
