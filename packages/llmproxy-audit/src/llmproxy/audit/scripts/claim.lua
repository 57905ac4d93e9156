-- Reclaim entries idle longer than ARGV[3] ms (XAUTOCLAIM) for consumer ARGV[2] of group ARGV[1].
-- An entry now delivered more than ARGV[5] times (its last delivery crashed or stalled a consumer) goes to
-- the dead-letter stream KEYS[2] and is acknowledged and deleted, in this one atomic step.
-- Returns {dead_lettered, {id, body, deliveries}, ...}.
local stream, dead = KEYS[1], KEYS[2]
local group, consumer, idle, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_deliveries, dead_maxlen, now_ms = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, idle, '0-0', 'COUNT', count)
local out = {0}
for _, entry in ipairs(claimed[2]) do
  local id, fields = entry[1], entry[2]
  local body = ''
  if fields then
    for i = 1, #fields, 2 do
      if fields[i] == 'e' then body = fields[i + 1] end
    end
  end
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  local deliveries = pending[1] and pending[1][4] or 1
  if deliveries > max_deliveries then
    redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', 'id', id, 'deliveries', deliveries - 1,
      'reason', 'delivered ' .. (deliveries - 1) .. ' times without being stored (its consumer crashed or stalled)',
      'failed_ms', now_ms, 'e', body)
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    out[1] = out[1] + 1
  else
    table.insert(out, {id, body, deliveries})
  end
end
return out
