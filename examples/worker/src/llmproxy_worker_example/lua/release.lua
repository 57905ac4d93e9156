-- Move up to ARGV[1] jobs whose time has come from the delayed set back to the queue, atomically (a worker
-- dying between the two commands would otherwise lose the job, or two workers queue it twice).
-- KEYS[1]: the delayed sorted set; KEYS[2]: the queue (a list).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, job in ipairs(due) do
  redis.call('ZREM', KEYS[1], job)
  redis.call('RPUSH', KEYS[2], job)
end
return #due
