-- evict: the owning server removes one of its entries, unless a reader holds it.
-- KEYS[1] entry hash   KEYS[2] read-lease zset
-- ARGV[1] pool id      ARGV[2] slot offset ("*" = any)
-- ARGV[3] mode: "lru" (any READY), "ttl" (only if expired), "dead" (the pool is gone: any state, leases void)
-- returns "EVICTED" | "GONE" (the entry no longer points at this slot: free it)
--       | "LEASED" | "PENDING" | "FRESH" (ttl mode, not expired yet)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'state', 'pool', 'off', 'exp')
if not cur[1] or cur[2] ~= ARGV[1] or (ARGV[2] ~= '*' and cur[3] ~= ARGV[2]) then return 'GONE' end
if ARGV[3] == 'dead' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 'EVICTED'
end
if cur[1] == 'P' then return 'PENDING' end
local exp = tonumber(cur[4]) or 0
if ARGV[3] == 'ttl' and (exp == 0 or exp > now) then return 'FRESH' end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) > 0 then return 'LEASED' end
redis.call('DEL', KEYS[1], KEYS[2])
return 'EVICTED'
