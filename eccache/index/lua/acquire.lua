-- acquire: take a read lease on a READY entry and count the hit.
-- KEYS[1] entry hash   KEYS[2] read-lease zset
-- ARGV[1] lease id     ARGV[2] lease ms
-- returns {} when not READY (or expired), else
--   {expires_ms, pool, off, nb, shape, dtype, ck, meta, hits, created}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'state', 'exp', 'pool', 'off', 'nb', 'shape', 'dtype', 'ck',
  'meta', 'hits', 'created')
if cur[1] ~= 'R' then return {} end
local exp = tonumber(cur[2]) or 0
if exp > 0 and exp <= now then return {} end
local expires = now + tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], expires, ARGV[1])
redis.call('PEXPIREAT', KEYS[2], expires + 1000)
local hits = redis.call('HINCRBY', KEYS[1], 'hits', 1)
redis.call('HSET', KEYS[1], 'atime', now)
return {expires, cur[3], cur[4], cur[5], cur[6], cur[7], cur[8], cur[9], hits, cur[11]}
