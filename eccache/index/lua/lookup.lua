-- lookup: read-only HMGET of many entries in one round trip (no state change).
-- KEYS[1..n] entry hashes of several hash slots: fine on one Redis; a Redis Cluster client would send
--            one call per slot (read-only, so no atomicity is lost; not implemented yet)
-- ARGV[1..m] field names
-- returns one array of m values per key
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, unpack(ARGV))
end
return out
