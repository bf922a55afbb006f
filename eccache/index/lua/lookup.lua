-- lookup: read-only HMGET of many entries in one round trip (no state change).
-- KEYS[1..n] entry hashes (on Redis Cluster the index falls back to one HMGET per key)
-- ARGV[1..m] field names
-- returns one array of m values per key
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, unpack(ARGV))
end
return out
