-- Take or renew one connection slot of a user, if the user is under the cap.
--
-- KEYS[1]  sorted set herald:{u:<user>}:conns  (member: connection id, score: lease expiry ms)
-- ARGV[1]  lease length in ms
-- ARGV[2]  cap (concurrent connections per user)
-- ARGV[3..] connection ids (several when renewing; the cap applies only to new ones)
--
-- Leases of dead processes expire by themselves, so a killed process cannot leak
-- slots for longer than one lease. Redis's clock is the only clock, so processes
-- with skewed clocks agree. Returns the number of ids that hold a slot now.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = 0
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) or redis.call('ZCARD', KEYS[1]) < cap then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
    held = held + 1
  end
end
redis.call('PEXPIRE', KEYS[1], lease)
return held
