-- tk-conform reference server: free a concurrency slot (not a contract script).
-- KEYS[1]: the slots sorted set
-- ARGV: leaseId, lateReleaseFrees (1 = the test fault: an unknown lease frees the oldest slot)
-- Reply: 1 when the lease held a slot, else 0 (a no-op: it never frees anyone else's slot)
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 0 and ARGV[2] == '1' then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0)
  if first[1] then
    redis.call('ZREM', KEYS[1], first[1])
  end
end
return removed
