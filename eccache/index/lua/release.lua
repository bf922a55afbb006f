-- release: drop one read lease.
-- KEYS[1] read-lease zset
-- ARGV[1] lease id
-- returns 1 when the lease was held, 0 otherwise
return redis.call('ZREM', KEYS[1], ARGV[1])
