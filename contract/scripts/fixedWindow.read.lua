-- fixedWindow.read (tk-conform contract v1): the raw fixed-window state, no decision, no write.
-- ARGV: none.
-- Reply: {pttl} when the key is absent (pttl = -2), else {pttl, start, count} where pttl is the
--   key's PTTL in ms (-1 = no expiry) and start / count the stored doubles as text (17 digits).
local pttl = redis.call('PTTL', KEYS[1])
local state = redis.call('HMGET', KEYS[1], 'start', 'count')
if not state[1] then return { pttl } end
return { pttl, state[1], state[2] }
