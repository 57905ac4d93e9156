-- Record one usage event, at most once per event id (see the package README, "Redis keys").
-- KEYS[1] the hour's hash   metering:{<tenant>}:<yyyy-MM-dd-HH>
-- KEYS[2] its dedupe set    metering:{<tenant>}:<yyyy-MM-dd-HH>:seen
-- KEYS[3] the tenant index  metering:{<tenant>}:dirty
-- ARGV[1] event id, ARGV[2] hour label, ARGV[3] hash expiry (unix s), ARGV[4] dedupe set expiry (unix s),
-- ARGV[5] index lifetime (ms), ARGV[6] the combination "<model>\t<api key>\t<endpoint>", ARGV[7] the model
-- ("" for none), ARGV[8] the seven counters, comma-separated, in the order of TOTALS below.
-- Returns 1 when counted, 0 when the event id was already counted in that hour.
-- The counters stay strings: a Lua number would print 1e+18 for large values, which HINCRBY refuses.
local TOTALS = {'requests', 'input_tokens', 'output_tokens', 'cached_input_tokens', 'reasoning_tokens',
                'cost_micros', 'unpriced_requests'}
local CODES = {'r', 'i', 'o', 'c', 'x', '$', 'u'}
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then
  return 0
end
local fresh = redis.call('EXISTS', KEYS[1]) == 0
local group = '\t' .. ARGV[6]
local i = 1
for value in string.gmatch(ARGV[8], '[^,]+') do
  if value ~= '0' then
    redis.call('HINCRBY', KEYS[1], TOTALS[i], value)
    redis.call('HINCRBY', KEYS[1], CODES[i] .. group, value)
    if i == 1 and ARGV[7] ~= '' then
      redis.call('HINCRBY', KEYS[1], 'model:' .. ARGV[7], value)  -- the seed's requests per model
    end
  end
  i = i + 1
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
