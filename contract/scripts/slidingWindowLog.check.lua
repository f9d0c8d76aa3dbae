-- slidingWindowLog.check (tk-conform contract v1, spec section 2): one atomic check of the exact
-- sliding-window log.
-- KEYS[1]: the limiter key.
-- ARGV (decimal strings, names in scripts/manifest.json): now, windowMs, limit, cost.
--   now = 0 reads the server clock (TIME) instead. cost must be a whole number (one entry per unit).
-- State: a sorted set of admitted units scored by their `now`, the i-th unit of an admit named
--   "<now>-<count + i>". Entries with score <= now - windowMs are dropped first (also on a
--   denial). An admit sets PEXPIRE max(1, ceil(windowMs)).
-- Reply: {allowed (1|0), limit, remaining, resetAt, retryAfterMs}, integers.

local function fail(name, want, raw)
  return error({ err = 'ERR slidingWindowLog.check: ' .. name .. ' must be ' .. want .. ', got ' .. tostring(raw) })
end

local function finite(x)
  return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge
end

local function positive(i, name)
  local x = tonumber(ARGV[i] or '')
  if not finite(x) or x <= 0 then fail(name, 'a positive finite number', ARGV[i]) end
  return x
end

local function not_negative(i, name)
  local x = tonumber(ARGV[i] or '')
  if not finite(x) or x < 0 then fail(name, 'a finite number >= 0', ARGV[i]) end
  return x
end

-- Member names are Lua's own number text (%.14g, what `..` writes), as in the ThrottleKit
-- scripts: `now` 1700000001618.25 is named 1700000001618.2, so two close instants can share a name.
local function text(x)
  return string.format('%.14g', x)
end

local now = not_negative(1, 'now')
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = positive(2, 'windowMs')
local limit = positive(3, 'limit')
local cost = not_negative(4, 'cost')
if cost ~= math.floor(cost) then fail('cost', 'a whole number (the log stores one entry per unit)', ARGV[4]) end

local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.17g', now - window))
local count = redis.call('ZCARD', key)

-- score of the n-th oldest entry (1-based), or nil when there is none
local function score_at(n)
  local got = redis.call('ZRANGE', key, string.format('%d', n - 1), string.format('%d', n - 1), 'WITHSCORES')
  if got[2] then return tonumber(got[2]) end
  return nil
end

if count + cost <= limit then
  for i = 1, cost do
    redis.call('ZADD', key, string.format('%.17g', now), text(now) .. '-' .. text(count + i))
  end
  -- an absent key (nothing admitted, cost 0) stays absent: PEXPIRE on it is a no-op
  redis.call('PEXPIRE', key, string.format('%d', math.max(1, math.ceil(window))))
  local oldest = score_at(1) or now
  return { 1, limit, math.max(0, limit - (count + cost)), math.ceil(oldest + window), 0 }
end

local retry
if count == 0 then
  retry = window
else
  local k = math.min(count, math.max(1, count + cost - limit))
  local ref = score_at(math.floor(k))
  retry = math.max(1, math.ceil(ref + window - now))
end
local oldest = score_at(1) or now
return { 0, limit, math.max(0, limit - count), math.ceil(oldest + window), retry }
