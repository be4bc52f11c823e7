-- Move a delivery that failed for good to the dead-letter stream, atomically.
--
-- KEYS[1]  task stream         herald:{q:<queue>}:tasks
-- KEYS[2]  dead-letter stream  herald:{q:<queue>}:dead
-- ARGV[1]  consumer group
-- ARGV[2]  entry id
-- ARGV[3]  MAXLEN of the dead-letter stream (approximate trim)
-- ARGV[4+] the dead entry's fields: field, value, ...
--
-- Returns 0 (and changes nothing) when the delivery is no longer pending.

if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
return 1
