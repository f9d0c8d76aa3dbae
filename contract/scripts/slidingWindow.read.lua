-- slidingWindow.read (tk-conform contract v1): the raw sliding-window slots, no decision, no write.
-- ARGV: none.
-- Reply: {pttl} when the key is absent (pttl = -2), else {pttl, field1, value1, field2, value2, ...}
--   where pttl is the key's PTTL in ms (-1 = no expiry), each field a slot number
--   (`i mod (buckets + 1)`) and each value the text "<bucket index>:<count>".
local pttl = redis.call('PTTL', KEYS[1])
local reply = { pttl }
local flat = redis.call('HGETALL', KEYS[1])
for j = 1, #flat do
  reply[j + 1] = flat[j]
end
return reply
