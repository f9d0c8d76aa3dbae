-- gcra.check (tk-conform contract v1, spec section 2): one atomic GCRA admission check.
-- KEYS[1]: the limiter key.
-- ARGV (decimal strings, names in scripts/manifest.json): now, periodMs, limit, burst, cost.
--   now = 0 reads the server clock (TIME) instead.
-- State: a string holding the theoretical arrival time `tat`, written with 17 significant digits
--   so the double round-trips exactly; PEXPIRE max(1, ceil(newTat - now)) ms.
-- Reply: {allowed (1|0), limit (= burst), remaining, resetAt, retryAfterMs}, integers.
-- Every number is a Lua double; the order of operations is the spec's, so results match bit for bit.

local function fail(name, want, raw)
  return error({ err = 'ERR gcra.check: ' .. name .. ' must be ' .. want .. ', got ' .. tostring(raw) })
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
local period = positive(2, 'periodMs')
local limit = positive(3, 'limit')
local burst = positive(4, 'burst')
local cost = not_negative(5, 'cost')

local T = period / limit
local tau = T * burst
local inc = T * cost

local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then
  tat = tonumber(stored)
  if not finite(tat) then fail('the stored tat', 'a number', stored) end
end
if tat < now then tat = now end

local newTat = tat + inc
local allowAt = newTat - tau

if now < allowAt then
  local remaining = math.max(0, math.floor((tau - (tat - now)) / T))
  return { 0, burst, remaining, math.ceil(tat), math.ceil(allowAt - now) }
end

local remaining = math.max(0, math.floor((tau - (newTat - now)) / T))
local expiry = math.max(1, math.ceil(newTat - now))
redis.call('SET', KEYS[1], string.format('%.17g', newTat), 'PX', string.format('%d', expiry))
return { 1, burst, remaining, math.ceil(newTat), 0 }
