-- Charge one replay to a user's sliding-window budget, or refuse.
--
-- KEYS[1]  sorted set herald:{u:<user>}:replays  (member: unique id, score: time ms)
-- ARGV[1]  window in ms
-- ARGV[2]  budget (replays per window)
-- ARGV[3]  unique member for this replay
--
-- A refused request records nothing, so retrying early never pushes its own
-- window further out. Returns 0 when charged, else the ms until a slot frees.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < budget then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
