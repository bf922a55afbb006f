-- abort: drop a pending entry whose write lease the caller holds.
-- KEYS[1] entry hash
-- ARGV[1] lease id
-- returns {1, pool, offset} when dropped, {0} otherwise
local cur = redis.call('HMGET', KEYS[1], 'state', 'wl', 'pool', 'off')
if cur[1] ~= 'P' or cur[2] ~= ARGV[1] then
  return {0}
end
redis.call('DEL', KEYS[1])
return {1, cur[3], cur[4]}
