-- fixedWindow.check (tk-conform contract v1, spec section 2): one atomic fixed-window check.
-- KEYS[1]: the limiter key.
-- ARGV (decimal strings, names in scripts/manifest.json): now, limit, windowMs, cost.
--   now = 0 reads the server clock (TIME) instead.
-- State: a hash {start, count} (17 significant digits); a count from another window counts as 0.
--   An admit writes and sets PEXPIRE max(1, ceil(resetAt - now)); a denial writes nothing.
-- Reply: {allowed (1|0), limit, remaining, resetAt, retryAfterMs}, integers.

local function fail(name, want, raw)
  return error({ err = 'ERR fixedWindow.check: ' .. name .. ' must be ' .. want .. ', got ' .. tostring(raw) })
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

local now = not_negative(1, 'now')
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local limit = positive(2, 'limit')
local window = positive(3, 'windowMs')
local cost = not_negative(4, 'cost')

local start = math.floor(now / window) * window
local resetAt = start + window

local state = redis.call('HMGET', KEYS[1], 'start', 'count')
local count = 0
if state[1] and tonumber(state[1]) == start then
  count = tonumber(state[2])
  if not finite(count) then fail('the stored count', 'a number', state[2]) end
end

if count + cost <= limit then
  redis.call('HSET', KEYS[1], 'start', string.format('%.17g', start), 'count', string.format('%.17g', count + cost))
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.max(1, math.ceil(resetAt - now))))
  return { 1, limit, limit - (count + cost), resetAt, 0 }
end

return { 0, limit, math.max(0, limit - count), resetAt, math.ceil(resetAt - now) }
