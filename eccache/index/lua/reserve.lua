-- reserve: take the write lease of a key and point it at a freshly allocated slot.
-- KEYS[1] entry hash   KEYS[2] read-lease zset
-- ARGV[1] lease id     ARGV[2] lease ms        ARGV[3] pool id   ARGV[4] slot offset
-- ARGV[5] nbytes       ARGV[6] shape "a,b"     ARGV[7] dtype     ARGV[8] metadata
-- ARGV[9] ttl s (applied at commit)            ARGV[10] pool id whose entries count as missing ("" none)
-- returns {"RESERVED", expires_ms} | {"EXISTS", 0} | {"IN_PROGRESS", expires_ms}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'state', 'pool', 'wexp', 'exp')
if cur[1] and cur[2] ~= ARGV[10] then
  local expired = cur[4] and tonumber(cur[4]) > 0 and tonumber(cur[4]) <= now
  if cur[1] == 'R' and not expired then
    return {'EXISTS', 0}
  end
  if cur[1] == 'P' and tonumber(cur[3]) > now then
    return {'IN_PROGRESS', tonumber(cur[3])}
  end
end
local expires = now + tonumber(ARGV[2])
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'P', 'wl', ARGV[1], 'wexp', expires, 'pool', ARGV[3],
  'off', ARGV[4], 'nb', ARGV[5], 'shape', ARGV[6], 'dtype', ARGV[7], 'meta', ARGV[8],
  'ttl', ARGV[9], 'created', now, 'atime', now, 'hits', 0, 'ck', 0, 'exp', 0)
-- a writer that dies leaves nothing behind: the pending entry disappears with its lease
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return {'RESERVED', expires}
