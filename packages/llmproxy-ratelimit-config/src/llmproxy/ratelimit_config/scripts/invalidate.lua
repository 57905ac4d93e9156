-- A write happened: bump the version (so in-flight fills of the old value are refused) and drop the entry.
-- KEYS[1] config key, KEYS[2] version key; ARGV[1] version ttl (s)
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[1]))
redis.call('DEL', KEYS[1])
return 1
