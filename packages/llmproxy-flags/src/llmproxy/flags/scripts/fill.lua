-- Cache a flag set's serialized snapshot unless a newer one is there, and raise the version key to it.
-- KEYS[1] snapshot hash (epoch, version, body), KEYS[2] version key ("<epoch>:<version>")
-- ARGV[1] epoch, ARGV[2] version, ARGV[3] body, ARGV[4] ttl (seconds)
-- Versions come from the database and only grow within an epoch, so an old reader can never overwrite a
-- newer snapshot; a different epoch (a recreated database) replaces whatever is there.
local epoch, version, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])

local function older(known_epoch, known_version)
  return known_epoch ~= epoch or (tonumber(known_version) or -1) < version
end

local have = redis.call('HMGET', KEYS[1], 'epoch', 'version')
local stored = 0
if older(have[1], have[2]) then
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'version', ARGV[2], 'body', ARGV[3])
  stored = 1
end
redis.call('EXPIRE', KEYS[1], ttl)

local known = redis.call('GET', KEYS[2])
local known_epoch, known_version = nil, nil
if known then
  known_epoch, known_version = string.match(known, '^(.*):(%d+)$')
end
if not known or older(known_epoch, known_version) then
  redis.call('SET', KEYS[2], epoch .. ':' .. ARGV[2], 'EX', ttl)
else
  redis.call('EXPIRE', KEYS[2], ttl)
end
return stored
