"""Lua scripts of ``RedisStore``. Each touches only the keys of one task (one hash slot)."""

# KEYS: state, log. ARGV: owner ('' = any), first seq, n, data_1..data_n,
#   final status ('' = none), endedAt, error json, result, ttl seconds, final data.
# Returns the new last seq; error 'ENDED', 'LOST', 'NOTASK' or 'SEQ <last>'.
APPEND = """
local v = redis.call('HMGET', KEYS[1], 'status', 'lastSeq', 'owner')
if not v[1] then return redis.error_reply('NOTASK') end
if v[1] == 'COMPLETED' or v[1] == 'FAILED' or v[1] == 'CANCELLED' then
  return redis.error_reply('ENDED')
end
if ARGV[1] ~= '' and v[3] ~= ARGV[1] then return redis.error_reply('LOST') end
local last = tonumber(v[2] or '0')
local first = tonumber(ARGV[2])
if first ~= last + 1 then return redis.error_reply('SEQ ' .. last) end
local n = tonumber(ARGV[3])
for i = 1, n do
  redis.call('XADD', KEYS[2], (first + i - 1) .. '-0', 'd', ARGV[3 + i])
end
last = first + n - 1
redis.call('HSET', KEYS[1], 'lastSeq', last)
local fs = ARGV[4 + n]
if fs ~= '' then
  redis.call('XADD', KEYS[2], (last + 1) .. '-0', 'd', ARGV[9 + n], 'f', '1')
  last = last + 1
  redis.call('HSET', KEYS[1], 'status', fs, 'endedAt', ARGV[5 + n], 'error', ARGV[6 + n],
    'lastSeq', last)
  if ARGV[7 + n] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[7 + n]) end
  redis.call('HDEL', KEYS[1], 'owner', 'leaseUntil')
  redis.call('EXPIRE', KEYS[1], ARGV[8 + n])
  redis.call('EXPIRE', KEYS[2], ARGV[8 + n])
end
return last
"""

# KEYS: state, log. ARGV: expected statuses ',A,B,', status, endedAt, error json, result,
#   ttl seconds, body without seq. Returns {seq, data, old status} or nil if not expected.
FINISH_IF = """
local v = redis.call('HMGET', KEYS[1], 'status', 'lastSeq')
if not v[1] then return redis.error_reply('NOTASK') end
if not string.find(ARGV[1], ',' .. v[1] .. ',', 1, true) then return nil end
local seq = tonumber(v[2] or '0') + 1
local data = '{"seq":' .. seq .. ',' .. string.sub(ARGV[7], 2)
redis.call('XADD', KEYS[2], seq .. '-0', 'd', data, 'f', '1')
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'endedAt', ARGV[3], 'error', ARGV[4],
  'lastSeq', seq)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[5]) end
redis.call('HDEL', KEYS[1], 'owner', 'leaseUntil')
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {seq, data, v[1]}
"""

# KEYS: state. ARGV: owner, leaseUntil, startedAt. Returns lastSeq, or nil if not PENDING.
CLAIM = """
local v = redis.call('HMGET', KEYS[1], 'status', 'lastSeq')
if v[1] ~= 'PENDING' then return nil end
redis.call('HSET', KEYS[1], 'status', 'RUNNING', 'owner', ARGV[1], 'leaseUntil', ARGV[2],
  'startedAt', ARGV[3])
return tonumber(v[2] or '0')
"""

# KEYS: state. ARGV: owner, leaseUntil. Returns 1 ok, 2 cancel requested, 0 lost.
RENEW = """
local v = redis.call('HMGET', KEYS[1], 'status', 'owner', 'cancel')
if v[1] ~= 'RUNNING' or v[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'leaseUntil', ARGV[2])
if v[3] == '1' then return 2 end
return 1
"""

# KEYS: state, log. ARGV: owner ('' = the lease must have lapsed before ARGV[2]), now,
#   body without seq. RUNNING -> PENDING with a non-final status message. Returns {seq, data}.
REQUEUE = """
local v = redis.call('HMGET', KEYS[1], 'status', 'lastSeq', 'owner', 'leaseUntil')
if v[1] ~= 'RUNNING' then return nil end
if ARGV[1] ~= '' then
  if v[3] ~= ARGV[1] then return nil end
elseif tonumber(v[4] or '0') >= tonumber(ARGV[2]) then
  return nil
end
local seq = tonumber(v[2] or '0') + 1
local data = '{"seq":' .. seq .. ',' .. string.sub(ARGV[3], 2)
redis.call('XADD', KEYS[2], seq .. '-0', 'd', data)
redis.call('HSET', KEYS[1], 'status', 'PENDING', 'lastSeq', seq)
redis.call('HDEL', KEYS[1], 'owner', 'leaseUntil')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {seq, data}
"""
