-- tk-conform reference server: take a concurrency slot (not a contract script).
-- KEYS[1]: the slots sorted set (member = lease id, score = expiry, epoch ms)
-- KEYS[2]: the set of every slots key, which the sweep walks
-- ARGV: ttlMs, ceiling, leaseId, neverReclaim (1 = the test fault: keep expired slots)
-- Reply: {allowed 0|1, held after, expiry (allowed: the new lease's; denied: the earliest held), now}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local ceiling = tonumber(ARGV[2])
local keep_expired = ARGV[4] == '1'
if not keep_expired then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
local held = redis.call('ZCARD', KEYS[1])
if held >= ceiling then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return { 0, held, tonumber(first[2]), now }
end
local expires = now + ttl
redis.call('ZADD', KEYS[1], expires, ARGV[3])
redis.call('SADD', KEYS[2], KEYS[1])
if not keep_expired then
  -- The set outlives its latest lease by a second, so an abandoned key goes away by itself.
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]) + 1000)
  -- The registry outlives every slots key it names, and goes away after the last one.
  if redis.call('PTTL', KEYS[2]) < ttl + 1000 then
    redis.call('PEXPIRE', KEYS[2], ttl + 1000)
  end
end
return { 1, held + 1, expires, now }
