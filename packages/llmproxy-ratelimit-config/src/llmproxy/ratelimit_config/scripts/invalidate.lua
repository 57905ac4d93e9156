-- A write happened: give the version a new unique token (so in-flight fills of the old value are refused)
-- and drop the entry.
-- KEYS[1] config key, KEYS[2] version key; ARGV[1] new version token, ARGV[2] version ttl (s)
redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('DEL', KEYS[1])
return 1
