-- Keep running tasks from being reclaimed: reset the idle time of each entry
-- that is still pending with this consumer (XCLAIM ... JUSTID does not count as
-- a delivery).  An entry another worker took over meanwhile is left alone.
--
-- KEYS[1]  task stream   herald:{q:<queue>}:tasks
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name
-- ARGV[3+] entry ids
--
-- Returns how many entries were touched.

local touched = 0
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #pending == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    touched = touched + 1
  end
end
return touched
