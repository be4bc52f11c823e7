-- Move retries whose time has come from the schedule back to the task stream.
--
-- KEYS[1]  task stream      herald:{q:<queue>}:tasks
-- KEYS[2]  retry schedule   herald:{q:<queue>}:retry
-- ARGV[1]  now, unix ms
-- ARGV[2]  most retries moved in one call
--
-- Each member is moved (XADD then ZREM) in this one script, so a task is never
-- in both places or in neither.  Returns {moved, next due ms or nil}.

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', unpack(cjson.decode(member)))
  redis.call('ZREM', KEYS[2], member)
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {#due, first[2]}
