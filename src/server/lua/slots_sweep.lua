-- tk-conform reference server: reclaim every expired slot (not a contract script).
-- KEYS[1]: the set of every slots key. The slots keys themselves are read from it, so this
-- script serves a single Redis, not a cluster.
-- Reply: the number of slots freed
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local freed = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  freed = freed + redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('EXISTS', key) == 0 then
    redis.call('SREM', KEYS[1], key)
  end
end
return freed
