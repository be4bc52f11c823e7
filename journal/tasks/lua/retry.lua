-- Move a failed delivery to the retry schedule, atomically: the task is in the
-- stream or in the schedule at every moment, so a worker dying during the
-- backoff loses nothing.
--
-- KEYS[1]  task stream      herald:{q:<queue>}:tasks
-- KEYS[2]  retry schedule   herald:{q:<queue>}:retry  (sorted set, score = due unix ms)
-- ARGV[1]  consumer group
-- ARGV[2]  entry id of the failed delivery
-- ARGV[3]  due time, unix ms
-- ARGV[4]  the next attempt's fields, a JSON array [field, value, ...]
--
-- Returns 0 (and changes nothing) when the delivery is no longer pending.

if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
