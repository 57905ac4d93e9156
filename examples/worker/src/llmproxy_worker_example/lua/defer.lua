-- Put a job in the delayed set, due ARGV[2] milliseconds from now (Redis time, so every worker agrees).
-- KEYS[1]: the delayed sorted set; ARGV[1]: the job's JSON.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return now + tonumber(ARGV[2])
