-- Number N chat-message events and publish each live, atomically.
--
-- KEYS[1]  sequence counter  herald:{m:<message>}:seq
-- KEYS[2]  live channel      herald:{m:<message>}
-- ARGV[1]  floor: the producer's last known sequence number (-1: none yet), or
--          '?' when the caller does not know it: then a missing counter makes the
--          script return -2 without publishing, and the caller asks PostgreSQL
-- ARGV[2]  counter TTL in seconds (refreshed on every call)
-- ARGV[3]  the envelope head, ARGV[4] the live frame's separator, ARGV[5] the
--          epoch field of a message's frames (herald.journal.wire owns all three)
-- ARGV[6+] one envelope tail per event (everything after the id)
--
-- Numbers come from one counter per message, so two producers of the same
-- message (a continuation racing the original) never hand out the same number,
-- and the number a live subscriber sees is the one the table will hold. The
-- floor re-seeds a counter Redis lost (restart without persistence), so numbers
-- never go backwards for the producer that knows them.
--
-- The live frame is "m <previous> <envelope>" (wire.encode_frame); previous is
-- empty for 0. On Redis Cluster the PUBLISH runs as SPUBLISH
-- (herald.journal.runtime.sharded).
-- Returns the last number handed out (or -2, see ARGV[1]).

local head, sep, epoch = ARGV[3], ARGV[4], ARGV[5]
local cur = redis.call('GET', KEYS[1])
if not cur and ARGV[1] == '?' then return -2 end
if cur then cur = tonumber(cur) else cur = -1 end
local floor = tonumber(ARGV[1]) or -1
if cur < floor then cur = floor end
for i = 6, #ARGV do
  cur = cur + 1
  local id = string.format('%d', cur)
  local previous = ''
  if cur > 0 then previous = string.format('%d', cur - 1) end
  redis.call('PUBLISH', KEYS[2], epoch .. sep .. previous .. sep .. head .. id .. ARGV[i])
end
redis.call('SET', KEYS[1], string.format('%d', cur), 'EX', tonumber(ARGV[2]))
return cur
