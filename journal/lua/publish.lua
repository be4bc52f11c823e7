-- Append N envelopes to one stream and publish each live, atomically.
--
-- KEYS[1]  stream            herald:{x:name}:stream
-- KEYS[2]  metadata hash     herald:{x:name}:meta   (fields: last, epoch)
-- KEYS[3+] idempotency keys  herald:{x:name}:idem:<key>, referenced by index below
-- ARGV[1]  MAXLEN (approximate trim)
-- ARGV[2]  idempotency window in seconds
-- ARGV[3]  epoch to use if the stream has none yet (fresh random from the caller)
-- ARGV[4]  live channel
-- ARGV[5]  the envelope head, ARGV[6] the live frame's separator (herald.journal.wire
--          owns both; they are passed in so the format is written in one place)
-- ARGV[7]  N, then per envelope three values: type, tail, idempotency key index (0 = none)
--
-- The envelope's id is its entry id, so the id is chosen here (same rule as
-- XADD '*': now in ms, or the last ms with seq + 1 when the clock has not moved
-- or went backwards) and spliced into the JSON before XADD. Redis runs the
-- script atomically: an entry is journaled if and only if it was published.
--
-- Each entry stores its predecessor's id (field p). A reader that finds the
-- first entry after its cursor does not point back at the cursor knows the
-- entries in between were trimmed; one with p == '' had no predecessor.
--
-- On Redis Cluster the live PUBLISH runs as SPUBLISH (herald.journal.runtime.sharded):
-- the channel carries the stream's hash tag, so it is in this script's slot.
--
-- The live frame is "<epoch> <previous id> <envelope>" (wire.encode_frame), so a subscriber can
-- tell a hole (previous id is not what it delivered last) from a normal step.
--
-- Returns, per envelope: id, previous id, 1 if it was a duplicate (idempotency
-- hit; nothing written) else 0; then the stream's epoch as the last element.

local stream, meta = KEYS[1], KEYS[2]
local maxlen, window, channel = ARGV[1], ARGV[2], ARGV[4]
local head, sep = ARGV[5], ARGV[6]
local n = tonumber(ARGV[7])

local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', meta, 'epoch', epoch)
end

local last = redis.call('HGET', meta, 'last')
if not last then
  -- Metadata gone but entries kept: continue after the newest entry.
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if top[1] then last = top[1][1] else last = '' end
end

local lms, lseq = -1, -1
if last ~= '' then
  local dash = string.find(last, '-', 1, true)
  lms = tonumber(string.sub(last, 1, dash - 1))
  lseq = tonumber(string.sub(last, dash + 1))
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local out = {}
local wrote = false
for i = 0, n - 1 do
  local typ, tail, ik = ARGV[8 + i * 3], ARGV[9 + i * 3], tonumber(ARGV[10 + i * 3])
  local seen = false
  if ik > 0 then seen = redis.call('GET', KEYS[ik]) end
  if seen then
    out[#out + 1] = seen
    out[#out + 1] = ''
    out[#out + 1] = 1
  else
    if now > lms then
      lms, lseq = now, 0
    else
      lseq = lseq + 1
    end
    local id = string.format('%d-%d', lms, lseq)
    local env = head .. id .. tail
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, id, 't', typ, 'p', last, 'e', env)
    redis.call('PUBLISH', channel, epoch .. sep .. last .. sep .. env)
    if ik > 0 then redis.call('SET', KEYS[ik], id, 'EX', window) end
    out[#out + 1] = id
    out[#out + 1] = last
    out[#out + 1] = 0
    last = id
    wrote = true
  end
end
if wrote then redis.call('HSET', meta, 'last', last) end
out[#out + 1] = epoch
return out
