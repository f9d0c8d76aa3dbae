-- tk-conform reference server: extend a held lease (Heartbeat; not a contract script).
-- KEYS[1]: the slots sorted set
-- KEYS[2]: the set of every slots key (its TTL follows the latest lease)
-- ARGV: leaseId, ttlMs, neverReclaim (test fault), ignoreHeartbeat (test fault: do not extend)
-- Reply: {1, expiry} when live, {0, 0} when the lease is gone or expired (reclaimed)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return { 0, 0 }
end
score = tonumber(score)
if score <= now and ARGV[3] ~= '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return { 0, 0 }
end
if ARGV[4] == '1' then
  return { 1, score }
end
local expires = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], expires, ARGV[1])
if ARGV[3] ~= '1' then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]) + 1000)
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) + 1000 then
    redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) + 1000)
  end
end
return { 1, expires }
