-- tk-conform reference server: Fleet.Reserve, a grant from a window's budget (not a contract script).
-- KEYS[1]: the window hash {start, granted}
-- ARGV: limit, windowMs, wants, overGrant (1 = the test fault: grant past the limit)
-- Reply: {capacity granted, window end, now}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local wants = tonumber(ARGV[3])
local start = math.floor(now / window) * window
local state = redis.call('HMGET', KEYS[1], 'start', 'granted')
local granted = 0
if state[1] and tonumber(state[1]) == start then
  granted = tonumber(state[2])
end
local capacity = wants
if ARGV[4] ~= '1' then
  capacity = math.max(0, math.min(wants, limit - granted))
end
granted = granted + capacity
redis.call('HSET', KEYS[1], 'start', string.format('%.17g', start), 'granted', string.format('%.17g', granted))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(start + window - now)) + 1000)
return { capacity, start + window, now }
