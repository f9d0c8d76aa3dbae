-- tk-conform reference server: reclaim the expired slots of one slots key (not a contract script).
-- KEYS[1]: a slots sorted set named by the registry
-- KEYS[2]: the set of every slots key (the same hash tag: one cluster slot)
-- Reply: the number of slots freed
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local freed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], KEYS[1])
end
return freed
