-- The rate limiter's decisions, atomically, one script call (one round trip) each
-- (README "Keys, limits and budgets"). Its Python twin is MemoryBackend in backends.py: keep the
-- two in step.
--
-- ARGV[1] = mode ("admit" | "settle"), ARGV[2] = now (epoch seconds, the gateway's clock),
-- ARGV[3] = the call's id, ARGV[4] = the settle rules (JSON), ARGV[5] = the admission rules (JSON;
-- admit only). KEYS are the settle rules' keys, then the admission rules' keys, in order. (JSON: a
-- call's ~100 values travel as two strings, which costs the gateway's Redis client far less.)
--
-- settle rules (first, in both modes: the gateway sends the settlements of ended calls along with
-- the next admission, so a call costs one round trip). No checks; a bucket may go below zero.
--   ["tb", capacity, amount]             give `amount` tokens back to a bucket (negative: take them)
--   ["cc", call id]                      free a call's concurrency slot
--   ["hi", ttl, [[field, amount], ...]]  HINCRBYFLOAT fields of a usage hash, which expires after ttl s
--
-- admission rules: [kind, group, a, b]. Every rule is checked first; a group (1: the API key, 2: a
-- provider) is applied only when all its rules pass, and group 2 only when group 1 passed too.
-- Reply per rule: {ok (0/1), remaining (string), wait in seconds (string; "-1": unknown)}.
--   tb  token bucket: a = capacity (per minute), b = cost. Refills capacity/60 per second.
--   cc  concurrency slots (a sorted set of call ids by lease expiry): a = limit, b = lease expiry.
--   bg  budget: a = limit (USD), b = seconds to the period's end; reads field "usd" of the hash.
--   ct  usage counter (hash field "req" += 1 when the group is applied): a = ttl seconds.
-- settle mode replies per settle rule: the bucket's level after it for "tb", "0" otherwise.

local mode = ARGV[1]
local now = tonumber(ARGV[2])
local call_id = ARGV[3]
local settles = cjson.decode(ARGV[4])

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

local function settle()
  local results = {}
  for i, rule in ipairs(settles) do
    local kind = rule[1]
    local key = KEYS[i]
    local remaining = 0
    if kind == 'tb' then
      local capacity, amount = rule[2], rule[3]
      local v, rate = level(key, capacity)
      v = math.min(capacity, v + amount)
      store(key, v, capacity, rate)
      remaining = v
    elseif kind == 'cc' then
      redis.call('ZREM', key, rule[2])
    elseif kind == 'hi' then
      for _, pair in ipairs(rule[3]) do
        redis.call('HINCRBYFLOAT', key, pair[1], tostring(pair[2]))
      end
      redis.call('EXPIRE', key, rule[2])
    else
      return redis.error_reply('unknown settle rule ' .. tostring(kind))
    end
    results[i] = tostring(remaining)
  end
  return results
end

local settled = settle()
if mode == 'settle' then
  return settled
end
if mode ~= 'admit' then
  return redis.error_reply('unknown mode ' .. tostring(mode))
end

local rules = cjson.decode(ARGV[5])
local offset = #settles
local results = {}
local passed = {true, true}
for i, rule in ipairs(rules) do
  local kind, group, a, b = rule[1], rule[2], rule[3], rule[4]
  local key = KEYS[offset + i]
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
for i, rule in ipairs(rules) do
  local kind, group, a, b = rule[1], rule[2], rule[3], rule[4]
  local key = KEYS[offset + i]
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
