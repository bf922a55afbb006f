-- commit: make a pending entry READY, if the caller still holds its write lease.
-- KEYS[1] entry hash
-- ARGV[1] lease id   ARGV[2] checksum (decimal string)
-- returns "OK" | "LEASE" (lease unknown, taken over or expired by Redis time)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'state', 'wl', 'wexp', 'ttl')
if cur[1] ~= 'P' or cur[2] ~= ARGV[1] or tonumber(cur[3]) <= now then
  return 'LEASE'
end
local ttl = tonumber(cur[4]) or 0
local exp = 0
if ttl > 0 then exp = now + ttl * 1000 end
redis.call('HSET', KEYS[1], 'state', 'R', 'ck', ARGV[2], 'atime', now, 'exp', exp)
redis.call('HDEL', KEYS[1], 'wl', 'wexp')
-- READY entries never expire by Redis TTL: expiry must respect read leases (see evict.lua)
redis.call('PERSIST', KEYS[1])
return 'OK'
