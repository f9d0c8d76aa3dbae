-- gcra.read (tk-conform contract v1): the raw GCRA state under KEYS[1], no decision, no write.
-- ARGV: none.
-- Reply: {pttl} when the key is absent (pttl = -2), else {pttl, tat} where pttl is the key's
--   PTTL in ms (-1 = no expiry) and tat the stored theoretical arrival time as text (17 digits).
local pttl = redis.call('PTTL', KEYS[1])
local tat = redis.call('GET', KEYS[1])
if not tat then return { pttl } end
return { pttl, tat }
