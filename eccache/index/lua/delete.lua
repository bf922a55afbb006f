-- delete: remove an entry from the index (its slot is freed by the owner's reconciliation).
-- KEYS[1] entry hash   KEYS[2] read-lease zset
-- ARGV[1] checksum that must match ("0" = any)
-- returns 1 when deleted, 0 otherwise
local cur = redis.call('HMGET', KEYS[1], 'state', 'ck')
if not cur[1] then return 0 end
if ARGV[1] ~= '0' and cur[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
