-- Put a dead-letter entry back on its task stream, at most once.
--
-- KEYS[1]  dead-letter stream  herald:{q:<queue>}:dead
-- KEYS[2]  task stream         herald:{q:<queue>}:tasks
-- ARGV[1]  dead entry id
-- ARGV[2+] the new task entry's fields: field, value, ...
--
-- Returns the new entry id, or nil when the dead entry was already gone (two
-- concurrent `herald tasks retry` calls requeue it once).

if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
  return nil
end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
