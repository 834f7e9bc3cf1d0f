-- The gateway's two token buckets, kept in Redis and shared by every gateway using them:
-- gwlab/limiter.py's arithmetic, step for step, run atomically by Redis.
--
-- KEYS[1]  the requests bucket, KEYS[2] the tokens bucket: hashes of unit, earn, cap (the
--          bucket's rate and capacity, set by whoever created or last configured it), level
--          (units at stamp) and stamp (microseconds of Redis's clock).
-- ARGV     op, time, n, then unit, earn, cap of the requests bucket and of the tokens bucket
--          (earn 0: no tokens limit), as gwlab.redis_bucket.arguments writes them.
--   op     admit      take a request token and n tokens, both or neither
--          refund     give n tokens back to the tokens bucket, never above its capacity
--          charge     take n tokens from the tokens bucket as debt, down to -2^53 units
--          configure  settle at the old rate, then take ARGV's rate and capacity, clamping
--          reset      both buckets full
--   time   microseconds, for tests only; empty: Redis's own clock (TIME). Microseconds since
--          the epoch stay below 2^53, where doubles hold whole numbers exactly, until 2255.
-- A bucket that does not exist is created full with ARGV's rate and capacity; otherwise those
-- of ARGV are read only by configure, so gateways configured apart cannot fight over them.
--
-- Reply: admitted (1 or 0), the wait in microseconds (0 when admitted), the bucket that was
-- short (0 none, 1 requests, 2 tokens), then the level (units), whole tokens left and
-- microseconds until full of the requests bucket, and of the tokens bucket (zeros without one).

local FLOOR = -9007199254740992  -- -2^53: debt deeper than this is not recorded
local op, n = ARGV[1], tonumber(ARGV[3])
local t
if ARGV[2] ~= '' then
  t = tonumber(ARGV[2])
else
  local clock = redis.call('TIME')
  t = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end

-- Whole numbers of units below 2^53, written so that they read back exactly.
local function num(x) return string.format('%.17g', x) end

local function open(key, first)
  local unit, earn, cap = tonumber(ARGV[first]), tonumber(ARGV[first + 1]), tonumber(ARGV[first + 2])
  local f = redis.call('HMGET', key, 'unit', 'earn', 'cap', 'level', 'stamp')
  if f[1] then
    return {key = key, unit = tonumber(f[1]), earn = tonumber(f[2]), cap = tonumber(f[3]),
            level = tonumber(f[4]), stamp = tonumber(f[5])}
  end
  return {key = key, unit = unit, earn = earn, cap = cap, level = cap, stamp = t}
end

local function save(b)
  redis.call('HSET', b.key, 'unit', num(b.unit), 'earn', num(b.earn), 'cap', num(b.cap),
             'level', num(b.level), 'stamp', num(b.stamp))
end

-- TokenBucket._settle: the level at t; a clock that steps back removes nothing.
local function settle(b)
  if t > b.stamp then
    local level = b.level + (t - b.stamp) * b.earn
    if level > b.cap then level = b.cap end
    b.level, b.stamp = level, t
  end
  return b.level
end

-- Python's divmod of floats (CPython's _float_div_mod), step for step: the same quotient and
-- remainder to the last bit, also past 2^53 (deep debt), where rounding enters.
local function divmod(x, y)
  local mod = math.fmod(x, y)
  local div = (x - mod) / y
  if mod ~= 0 then
    if (y < 0) ~= (mod < 0) then
      mod = mod + y
      div = div - 1
    end
  end
  if div ~= 0 then
    local floordiv = math.floor(div)
    if div - floordiv > 0.5 then floordiv = floordiv + 1 end
    return floordiv, mod
  end
  return 0, mod
end

-- TokenBucket.take (try_acquire for one): within the tolerance of just under a microsecond.
local function take(b, count)
  local level, need = settle(b), count * b.unit
  if level >= need - b.earn + 1 then
    b.level = level - need
    return true
  end
  return false
end

-- TokenBucket.retry_after_us: whole microseconds until count tokens are due, at least 1.
local function wait(b, count)
  local level, need = settle(b), count * b.unit
  if level >= need - b.earn + 1 then return 0 end
  local whole, part = divmod(need - level, b.earn)
  return math.max(1, whole + math.ceil(part / b.earn - (t - b.stamp)))
end

-- TokenBucket.status: whole tokens left (never below 0) and microseconds until full,
-- rounded up: -((level - cap) // earn), as Python computes it.
local function status(b)
  local level = settle(b)
  if level >= b.cap then return level, (divmod(b.cap, b.unit)), 0 end
  local left = 0
  if level > 0 then left = (divmod(level, b.unit)) end
  return level, left, -(divmod(level - b.cap, b.earn))
end

local limited = tonumber(ARGV[8]) > 0
if op == 'reset' then
  redis.call('DEL', KEYS[1], KEYS[2])
elseif op == 'configure' and not limited then
  redis.call('DEL', KEYS[2])
end
local requests = open(KEYS[1], 4)
local tokens = limited and open(KEYS[2], 7) or nil
local admitted, waited, short = 1, 0, 0

if op == 'admit' then
  if tokens == nil or n == 0 then
    if not take(requests, 1) then
      admitted, waited, short = 0, wait(requests, 1), 1
    end
  elseif take(requests, 1) then
    if not take(tokens, n) then
      requests.level = math.min(requests.level + requests.unit, requests.cap)  -- neither: the token goes back
      admitted, waited, short = 0, wait(tokens, n), 2
    end
  else
    local w, tw = wait(requests, 1), wait(tokens, n)
    admitted, waited, short = 0, w, 1
    if tw > w then waited, short = tw, 2 end
  end
elseif op == 'refund' then
  tokens.level = math.min(settle(tokens) + n * tokens.unit, tokens.cap)
elseif op == 'charge' then
  tokens.level = math.max(settle(tokens) - n * tokens.unit, FLOOR)
elseif op == 'configure' then
  for _, pair in ipairs({{requests, 4}, {tokens, 7}}) do
    local b, first = pair[1], pair[2]
    if b then
      local level = settle(b)
      b.earn, b.cap = tonumber(ARGV[first + 1]), tonumber(ARGV[first + 2])
      b.level = math.min(level, b.cap)
    end
  end
end

local reply = {admitted, waited, short}
for _, b in ipairs({requests, tokens or false}) do
  if b then
    local level, left, reset = status(b)  -- settles, as the local bucket's status does
    save(b)
    table.insert(reply, level)
    table.insert(reply, left)
    table.insert(reply, reset)
  else
    for _ = 1, 3 do table.insert(reply, 0) end
  end
end
return reply
