"""Lua scripts of ``RedisStore``. Each touches only the keys of one task (one hash slot), but
``IF_BELOW`` on one Redis (see there)."""

# The log writes of several tasks in one call (a flush), one task after another.
# KEYS: state_1, log_1, state_2, log_2, ... ARGV, for each task in turn: owner ('' = any),
#   first seq, n, data_1..data_n, final status ('' = none, and nothing more for this task),
#   then only with a final status: endedAt, error json, result, ttl seconds, final data.
# Returns one reply per task: its new last seq, or an error text 'ENDED', 'LOST', 'NOTASK' or
#   'SEQ <last>' (that task's writes are refused; the others' still happen). A retry of a
#   finish that already landed (its reply was lost) answers the last seq, not 'ENDED'.
# Redis Cluster: call it with one task's keys (one hash slot) at a time.
APPEND = """
local function append(state, log, a, n)
  local v = redis.call('HMGET', state, 'status', 'lastSeq', 'owner')
  if not v[1] then return 'NOTASK' end
  local f = a + 3 + n
  if v[1] == 'COMPLETED' or v[1] == 'FAILED' or v[1] == 'CANCELLED' then
    if ARGV[f] ~= '' then  -- a retry of this very finish (its reply was lost): done already
      local e = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
      if e[1] and e[1][2][2] == ARGV[f + 5] then return tonumber(v[2]) end
    end
    return 'ENDED'
  end
  if ARGV[a] ~= '' and v[3] ~= ARGV[a] then return 'LOST' end
  local last = tonumber(v[2] or '0')
  local first = tonumber(ARGV[a + 1])
  if first ~= last + 1 then return 'SEQ ' .. last end
  for i = 1, n do
    redis.call('XADD', log, (first + i - 1) .. '-0', 'd', ARGV[a + 2 + i])
  end
  last = first + n - 1
  redis.call('HSET', state, 'lastSeq', last)
  if ARGV[f] ~= '' then
    redis.call('XADD', log, (last + 1) .. '-0', 'd', ARGV[f + 5], 'f', '1')
    last = last + 1
    redis.call('HSET', state, 'status', ARGV[f], 'endedAt', ARGV[f + 1], 'error', ARGV[f + 2],
      'lastSeq', last)
    if ARGV[f + 3] ~= '' then redis.call('HSET', state, 'result', ARGV[f + 3]) end
    redis.call('HDEL', state, 'owner', 'leaseUntil')
    redis.call('EXPIRE', state, ARGV[f + 4])
    redis.call('EXPIRE', log, ARGV[f + 4])
  end
  return last
end
local out = {}
local a = 1
for k = 1, #KEYS, 2 do
  local n = tonumber(ARGV[a + 2])
  out[#out + 1] = append(KEYS[k], KEYS[k + 1], a, n)
  a = a + 4 + n
  if ARGV[a - 1] ~= '' then a = a + 5 end
end
return out
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

# KEYS: state. ARGV: owner, leaseUntil, startedAt. Returns the claimed record's fields
#   (HGETALL), or nil if the task is not PENDING.
CLAIM = """
local v = redis.call('HMGET', KEYS[1], 'status', 'lastSeq')
if v[1] ~= 'PENDING' then return nil end
redis.call('HSET', KEYS[1], 'status', 'RUNNING', 'owner', ARGV[1], 'leaseUntil', ARGV[2],
  'startedAt', ARGV[3])
return redis.call('HGETALL', KEYS[1])
"""

# The leases of several tasks of one owner. KEYS: state_1, state_2, ... ARGV: owner,
#   leaseUntil. Returns per task: 1 ok, 2 cancel requested, 0 lost. (Cluster: one key a call.)
RENEW = """
local out = {}
for k = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[k], 'status', 'owner', 'cancel')
  if v[1] ~= 'RUNNING' or v[2] ~= ARGV[1] then
    out[k] = 0
  else
    redis.call('HSET', KEYS[k], 'leaseUntil', ARGV[2])
    out[k] = v[3] == '1' and 2 or 1
  end
end
return out
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

# KEYS: state. Marks a task for cancelling; 0 (and nothing written) if there is no such task.
CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cancel', '1')
return 1
"""

# The rate limit (gateway/store/_limits.py): a token bucket. KEYS: the bucket (a hash).
#   ARGV: rate (tokens a second), burst. Takes a token: returns 0 when granted, else the
#   milliseconds until one is available. Timed by Redis's clock, so replicas' clocks never
#   matter; the bucket expires once it would be full again (a missing bucket is a full one).
TAKE_TOKEN = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = burst
if v[1] then
  tokens = math.min(burst, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * rate / 1000)
end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
"""

# The queue bound (gateway/store/_limits.py): commands run only while a sorted set (the PENDING
#   index) holds fewer members than a bound, atomically with the count. KEYS: the sorted set,
#   then each command's key. ARGV: the bound, then per command: how many arguments follow its
#   key, its name, those arguments. Returns 1 if the commands ran, else 0 (nothing written).
IF_BELOW = """
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
local a = 2
for k = 2, #KEYS do
  local n = tonumber(ARGV[a])
  redis.call(ARGV[a + 1], KEYS[k], unpack(ARGV, a + 2, a + 1 + n))
  a = a + 2 + n
end
return 1
"""
