-- Finish one delivered task: acknowledge it and delete its entry, atomically.
--
-- KEYS[1]  task stream   herald:{q:<queue>}:tasks
-- ARGV[1]  consumer group
-- ARGV[2]  entry id
--
-- Only the delivery still pending in the group is finished: if another worker
-- already finished it (it was reclaimed while this one stalled), nothing is
-- done and 0 is returned.  Acknowledged entries are deleted, so the stream only
-- holds unfinished tasks and is never trimmed (trimming could drop pending work).

if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
