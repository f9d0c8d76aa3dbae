-- slidingWindow.check (tk-conform contract v1, spec section 2): one atomic check of the bucketed
-- sliding-window estimate.
-- KEYS[1]: the limiter key.
-- ARGV (decimal strings, names in scripts/manifest.json): now, windowMs, limit, cost, buckets.
--   now = 0 reads the server clock (TIME) instead.
-- State: a hash of S + 1 slots (S = buckets). Bucket index i lives in field `i mod (S + 1)`
--   (Lua's % is the floored modulo, never negative) as the text "<i>:<count>"; a slot counts for
--   index i only when its stored index equals i. An admit adds cost to bucket c and sets
--   PEXPIRE ceil(windowMs + w); a denial writes nothing.
-- Reply: {allowed (1|0), limit, remaining, resetAt, retryAfterMs}, integers.

local function fail(name, want, raw)
  return error({ err = 'ERR slidingWindow.check: ' .. name .. ' must be ' .. want .. ', got ' .. tostring(raw) })
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
local window = positive(2, 'windowMs')
local limit = positive(3, 'limit')
local cost = not_negative(4, 'cost')
local S = positive(5, 'buckets')
if S ~= math.floor(S) then fail('buckets', 'a whole number of at least 1', ARGV[5]) end

local ring = S + 1
local w = window / S
local c = math.floor(now / w)
local elapsed = math.max(0, now - c * w)
local weight = math.min(1, math.max(0, (w - elapsed) / w))

-- field name -> stored text, read once
local slots = {}
local flat = redis.call('HGETALL', KEYS[1])
for j = 1, #flat, 2 do
  slots[flat[j]] = flat[j + 1]
end

local function field(i)
  return string.format('%d', i % ring)
end

local function count_of(i)
  local text = slots[field(i)]
  if not text then return 0 end
  local index, count = string.match(text, '^(%-?%d+):(.+)$')
  if tonumber(index) ~= i then return 0 end
  count = tonumber(count)
  if not finite(count) then fail('the stored bucket', '"<index>:<count>"', text) end
  return count
end

local full = 0
for i = c - S + 1, c do
  full = full + count_of(i)
end
local oldest = count_of(c - S)
local estimate = full + oldest * weight
local projected = estimate + cost
local resetAt = math.ceil((c + 1) * w + window)

if projected <= limit then
  local current = count_of(c)
  -- The count is Lua's own number text (%.14g, what `..` writes), as in the ThrottleKit scripts:
  -- a fractional count reads back rounded to 14 significant digits (0.1 + 2.7 is stored as 2.8).
  redis.call('HSET', KEYS[1], field(c), string.format('%d:%.14g', c, current + cost))
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(window + w)))
  return { 1, limit, math.max(0, math.floor(limit - projected)), resetAt, 0 }
end

local D = projected - limit
local retry
if oldest > 0 and D <= oldest * weight then
  retry = math.ceil(D * w / oldest)
else
  retry = math.ceil((c + 1) * w - now)
end
retry = math.max(1, retry)
return { 0, limit, math.max(0, math.floor(limit - estimate)), resetAt, retry }
