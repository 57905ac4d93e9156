-- Fill the cache only if no write happened since the reader looked (the version is what it saw then).
-- KEYS[1] config key, KEYS[2] version key; ARGV[1] version seen ('' = none), ARGV[2] value, ARGV[3] ttl (s)
local version = redis.call('GET', KEYS[2])
if (version or '') ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
