-- Record a worker's heartbeat and drop the fields of workers gone long ago.
--
-- KEYS[1]  herald:workers   hash: worker id -> last heartbeat, unix ms
-- ARGV[1]  now, unix ms
-- ARGV[2]  drop fields older than this many ms
-- ARGV[3]  key lifetime in ms (the hash disappears when no worker writes)
-- ARGV[4]  worker id to record, or '' to only prune (readers)
--
-- Returns the remaining fields as HGETALL does.

local now = tonumber(ARGV[1])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
local all = redis.call('HGETALL', KEYS[1])
local kept = {}
for i = 1, #all, 2 do
  local seen = tonumber(all[i + 1])
  if seen == nil or now - seen > tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    kept[#kept + 1] = all[i]
    kept[#kept + 1] = all[i + 1]
  end
end
return kept
