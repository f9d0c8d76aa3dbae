-- tokenBucket.check (tk-conform contract v1, spec section 2): one atomic token-bucket check.
-- KEYS[1]: the limiter key.
-- ARGV (decimal strings, names in scripts/manifest.json): now, capacity, refillPerSec, cost.
--   now = 0 reads the server clock (TIME) instead.
-- State: a hash {tokens, last}, each written with 17 significant digits; an absent key is a full
--   bucket. An admit writes and sets PEXPIRE max(1, ceil(capacity / r)); a denial writes nothing.
-- Reply: {allowed (1|0), limit (= capacity), remaining, resetAt, retryAfterMs}, integers.

local function fail(name, want, raw)
  return error({ err = 'ERR tokenBucket.check: ' .. name .. ' must be ' .. want .. ', got ' .. tostring(raw) })
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
local capacity = positive(2, 'capacity')
local refill = positive(3, 'refillPerSec')
local cost = not_negative(4, 'cost')

local r = refill / 1000

local state = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = capacity
local last = now
if state[1] then
  tokens = tonumber(state[1])
  last = tonumber(state[2])
  if not finite(tokens) or not finite(last) then
    fail('the stored state', 'two numbers', tostring(state[1]) .. ',' .. tostring(state[2]))
  end
end

local elapsed = math.max(0, now - last)
tokens = math.min(capacity, tokens + elapsed * r)

if tokens >= cost then
  local left = tokens - cost
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', left), 'last', string.format('%.17g', now))
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.max(1, math.ceil(capacity / r))))
  return { 1, capacity, math.max(0, math.floor(left)), now + math.ceil((capacity - left) / r), 0 }
end

return {
  0,
  capacity,
  math.max(0, math.floor(tokens)),
  now + math.ceil((capacity - tokens) / r),
  math.ceil((cost - tokens) / r),
}
