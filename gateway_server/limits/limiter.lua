-- The rate limiter's decisions, atomically in one round trip (README "Keys, limits and budgets").
-- The Python twin of this script is gateway_server/limits/memory.py; keep the two in step.
--
-- ARGV[1] = mode ("admit" | "settle"), ARGV[2] = now (epoch seconds, the gateway's clock),
-- ARGV[3] = the call's id; then 4 values per rule: kind, group, a, b. KEYS[i] is rule i's key.
--
-- admit: every rule is checked first; a group (1: the API key, 2: a provider) is applied only when
-- all its rules pass, and group 2 only when group 1 passed too. Per rule the reply is
-- {ok (0/1), remaining (string), wait in seconds (string; "-1": unknown)}.
--   tb  token bucket: a = capacity (per minute), b = cost. Refills capacity/60 per second.
--   cc  concurrency slots (a sorted set of call ids by lease expiry): a = limit, b = lease expiry.
--   bg  budget: a = limit (USD), b = seconds to the period's end; reads field "usd" of the hash.
--   ct  usage counter (hash field "req" += 1 when the group is applied): a = ttl seconds.
-- settle: applies every rule, no checks; rules have their own lengths. Reply: per rule a string,
-- the bucket's level after it for "tb", "0" otherwise.
--   tb, capacity, amount   gives back `amount` tokens (negative: takes them; may go below zero)
--   cc                     releases the call's slot
--   hi, field, amount, ttl HINCRBYFLOAT of a usage hash, which then expires after ttl seconds

local mode = ARGV[1]
local now = tonumber(ARGV[2])
local call_id = ARGV[3]

local function level(key, capacity)
  local state = redis.call('HMGET', key, 'v', 't')
  local rate = capacity / 60
  if not state[1] then
    return capacity, rate
  end
  local elapsed = now - tonumber(state[2])
  if elapsed < 0 then elapsed = 0 end
  return math.min(capacity, tonumber(state[1]) + elapsed * rate), rate
end

local function store(key, value, capacity, rate)
  redis.call('HSET', key, 'v', tostring(value), 't', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((capacity - value) / rate * 1000) + 1000)
end

if mode == 'admit' then
  local n = (#ARGV - 3) / 4
  local results = {}
  local passed = {true, true}
  for i = 1, n do
    local base = 3 + (i - 1) * 4
    local kind, group, a, b = ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
    local key = KEYS[i]
    local ok, remaining, wait = 1, 0, 0
    if kind == 'tb' then
      local v, rate = level(key, a)
      if v >= b then remaining = v - b else ok = 0; remaining = v; wait = (b - v) / rate end
    elseif kind == 'cc' then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
      local used = redis.call('ZCARD', key)
      if used < a then remaining = a - used - 1 else ok = 0; remaining = 0; wait = -1 end
    elseif kind == 'bg' then
      local spent = tonumber(redis.call('HGET', key, 'usd') or '0')
      if spent < a then remaining = a - spent else ok = 0; remaining = 0; wait = b end
    end
    if ok == 0 then passed[group] = false end
    results[i] = {ok, tostring(remaining), tostring(wait)}
  end
  if not passed[1] then passed[2] = false end
  for i = 1, n do
    local base = 3 + (i - 1) * 4
    local kind, group, a, b = ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
    local key = KEYS[i]
    if passed[group] then
      if kind == 'tb' then
        local v, rate = level(key, a)
        store(key, v - b, a, rate)
      elseif kind == 'cc' then
        redis.call('ZADD', key, b, call_id)
        redis.call('EXPIRE', key, math.ceil(b - now) + 1)
      elseif kind == 'ct' then
        redis.call('HINCRBY', key, 'req', 1)
        redis.call('EXPIRE', key, a)
      end
    end
  end
  return results
end

if mode == 'settle' then
  local results = {}
  local i, argi = 1, 4
  while argi <= #ARGV do
    local kind = ARGV[argi]
    local key = KEYS[i]
    local remaining = 0
    if kind == 'tb' then
      local capacity, amount = tonumber(ARGV[argi + 1]), tonumber(ARGV[argi + 2])
      local v, rate = level(key, capacity)
      v = math.min(capacity, v + amount)
      store(key, v, capacity, rate)
      remaining = v
      argi = argi + 3
    elseif kind == 'cc' then
      redis.call('ZREM', key, call_id)
      argi = argi + 1
    elseif kind == 'hi' then
      redis.call('HINCRBYFLOAT', key, ARGV[argi + 1], ARGV[argi + 2])
      redis.call('EXPIRE', key, tonumber(ARGV[argi + 3]))
      argi = argi + 4
    else
      return redis.error_reply('unknown settle rule ' .. tostring(kind))
    end
    results[i] = tostring(remaining)
    i = i + 1
  end
  return results
end

return redis.error_reply('unknown mode ' .. tostring(mode))
