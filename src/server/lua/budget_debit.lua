-- tk-conform reference server: a fleetBudget debit, contract-v1 section 3 (not a contract script).
-- KEYS[1]: the meter hash {start, used}
-- ARGV: budget, windowMs, tokens
-- Reply: the 5-integer decision tuple
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local budget = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local start = math.floor(now / window) * window
local reset = start + window
local state = redis.call('HMGET', KEYS[1], 'start', 'used')
local used = 0
if state[1] and tonumber(state[1]) == start then
  used = tonumber(state[2])
end
if used < budget then
  used = used + tokens
  redis.call('HSET', KEYS[1], 'start', string.format('%.17g', start), 'used', string.format('%.17g', used))
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(reset - now)))
  return { 1, budget, math.max(0, budget - used), reset, 0 }
end
return { 0, budget, math.max(0, budget - used), reset, reset - now }
