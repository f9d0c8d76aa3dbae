-- slidingWindowLog.read (tk-conform contract v1): the raw log, no decision, no write.
-- ARGV: none.
-- Reply: {pttl} when the key is absent (pttl = -2), else {pttl, member1, score1, member2, score2, ...}
--   oldest first, where pttl is the key's PTTL in ms (-1 = no expiry), each member
--   "<now>-<n>" and each score the admitting `now` as text.
local pttl = redis.call('PTTL', KEYS[1])
local reply = { pttl }
local flat = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for j = 1, #flat do
  reply[j + 1] = flat[j]
end
return reply
