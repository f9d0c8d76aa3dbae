-- tokenBucket.read (tk-conform contract v1): the raw token-bucket state, no decision, no write.
-- ARGV: none.
-- Reply: {pttl} when the key is absent (pttl = -2), else {pttl, tokens, last} where pttl is the
--   key's PTTL in ms (-1 = no expiry) and tokens / last the stored doubles as text (17 digits).
local pttl = redis.call('PTTL', KEYS[1])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'last')
if not state[1] then return { pttl } end
return { pttl, state[1], state[2] }
