-- Move entry ARGV[2] of KEYS[1] (group ARGV[1]) to the dead-letter stream KEYS[2]: written there first,
-- then acknowledged and deleted, atomically.
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'id', ARGV[2], 'deliveries', ARGV[4],
  'reason', ARGV[5], 'failed_ms', ARGV[6], 'e', ARGV[7])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
