-- llmproxy-quota: every limit of one request, evaluated atomically in one round trip.
--
-- ARGV[1] "<mode> <reservation> <lease ms> <request cost> <token cost> <now ms>" (one argument: each argument
--         costs the client ~1 us to encode):
--   mode:        "admit"  all-or-nothing: consume every limit or none
--                "check"  dry run: evaluate, write nothing, report the state before the cost
--                "force"  consume every limit unconditionally (increment)
--                "settle" delete the reservation KEYS[1]; if it existed, charge/refund the signed costs
--   reservation: 1 when KEYS[1] is a reservation key, else 0; lease: its lifetime in ms (admit)
--   costs:       of each "r" limit and of each "t" limit (signed when settling)
--   now:         ms since the epoch, or empty to use Redis TIME (so gateway instances with skewed clocks agree)
-- ARGV[2] the limits, in KEYS order after the reservation key, each "<kind> <unit> <limit> <burst> <period ms>
--         <window end ms>;" -- kind "g" GCRA, "d" UTC day, "m" UTC month; unit "r" requests or "t" tokens;
--         window end (settle only, else 0): "d"/"m" the window a reserved cost was counted in; "g" the charge
--         end, the key's TAT right after the admit (ms, rounded up): a refund is capped by what of the
--         reservation's charge has not drained by now
--
-- GCRA state (STRING "<tat_ms> <rem>"): the theoretical arrival time TAT = tat_ms + rem / limit, kept exact.
-- Budget state (STRING "<window end ms> <used>"): a budget whose window is not the current one counts as 0.
-- Returns one string: "<ok> <now_ms>" then per limit " <usage> <reset_in_ms> <retry_after_ms>"; retry_after is 0
-- when the limit admits and -1 when the cost can never fit. Remaining = (burst or limit) - usage.

local mode, resv_s, lease_s, rcost_s, tcost_s, now_s =
  string.match(ARGV[1], "^(%a+) ([01]) (%d+) (%-?%d+) (%-?%d+) (%d*)$")
local now
if now_s == "" then
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(now_s)
end
local has_resv = resv_s == "1"
local first = has_resv and 2 or 1
local costs = {r = tonumber(rcost_s), t = tonumber(tcost_s)}
local DAY = 86400000

if mode == "settle" and redis.call("DEL", KEYS[1]) == 0 then
  return "0 " .. now
end

-- exact integer division on doubles (all operands stay below 2^53)
local function idiv(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then q = q - 1 elseif r >= b then q = q + 1 end
  return q
end

local function ceildiv(a, b)
  return -idiv(-a, b)
end

-- numbers below 1e14 convert exactly (and cheaply) through Lua's own "%.14g"
local function fmt(x)
  if x < 1e14 and x > -1e14 then return x end
  return string.format("%.0f", x)
end

-- "a b" / "a b c": one string.format("%d") for integers below 2^53 (~4 us less per admit, measured, than
-- tostring and ..), else exact through fmt
local EXACT = 2 ^ 53
local function pair(a, b)
  if a < EXACT and a > -EXACT and b < EXACT and b > -EXACT then return string.format("%d %d", a, b) end
  return fmt(a) .. " " .. fmt(b)
end

local function triple(a, b, c)
  if c < EXACT and c > -EXACT then return pair(a, b) .. string.format(" %d", c) end
  return fmt(a) .. " " .. fmt(b) .. " " .. fmt(c)
end

-- Howard Hinnant's civil calendar algorithms (proleptic Gregorian, UTC)
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m > 2) and (m - 3) or (m + 9)
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  if m <= 2 then y = y + 1 end
  return y, m
end

local function window_end(kind)
  local day = math.floor(now / DAY)
  if kind == "d" then
    return (day + 1) * DAY
  end
  local y, m = civil_from_days(day)
  if m == 12 then y, m = y + 1, 1 else m = m + 1 end
  return days_from_civil(y, m, 1) * DAY
end

local ok_all = true
local out = {}
local writes = {}

local stored = {}
if #KEYS >= first then stored = redis.call("MGET", unpack(KEYS, first)) end

local i = 0
for kind, unit, limit_s, burst_s, period_s, reserved_s in
    string.gmatch(ARGV[2], "(%a) (%a) (%d+) (%d+) (%d+) (%d+);") do
  local cost = costs[unit]
  local limit = tonumber(limit_s)
  local key = KEYS[first + i]
  i = i + 1
  local raw = stored[i]
  local ok, reset_at, retry, usage = 1, now, 0, 0

  if kind == "g" then
    local burst = tonumber(burst_s)
    local period = tonumber(period_s)
    local cap = burst * period
    local tat, rem = now, 0
    if raw then
      local sp = string.find(raw, " ", 1, true)
      tat, rem = tonumber(string.sub(raw, 1, sp - 1)), tonumber(string.sub(raw, sp + 1))
      if limit > 0 and rem >= limit then tat, rem = tat + idiv(rem, limit), rem % limit end
      if tat < now then tat, rem = now, 0 end
    end
    -- debt: how far TAT lies ahead of now, in ms x limit (exact)
    local debt = (tat - now) * limit + rem
    local new_tat, new_rem = tat, rem
    if limit <= 0 then
      if cost > 0 then ok, retry = 0, -1 end
    else
      local new_debt
      if cost >= 0 then
        new_debt = debt + cost * period
      else
        -- a refund returns only the part of the reservation's own charge not yet drained (its charge ended
        -- at <window end>, the TAT after its admit rounded up to the ms): what drained already was replaced
        -- by other requests' charges, which a refund must not erase; never below full capacity now
        local refund = math.min(-cost * period, (tonumber(reserved_s) - now) * limit)
        if refund > 0 then new_debt = math.max(0, debt - refund) else new_debt = debt end
      end
      if mode ~= "force" and mode ~= "settle" and new_debt > cap then
        ok = 0
        retry = (cost > burst) and -1 or ceildiv(new_debt - cap, limit)
        new_debt = debt
      end
      if mode == "check" then new_debt = debt end
      new_tat = now + idiv(new_debt, limit)
      new_rem = new_debt - (new_tat - now) * limit
      reset_at = now + ceildiv(new_debt, limit)
      usage = ceildiv(new_debt, period)
      if ok == 1 and cost ~= 0 then
        writes[#writes + 1] = {"g", key, new_tat, new_rem, reset_at - now + 1000}
      end
    end
  else
    local wend = window_end(kind)
    local used = 0
    if raw then
      local sp = string.find(raw, " ", 1, true)
      if tonumber(string.sub(raw, 1, sp - 1)) == wend then used = tonumber(string.sub(raw, sp + 1)) end
    end
    local new_used = used + cost
    if cost < 0 then
      -- a refund only ever returns to the window the cost was reserved in
      if tonumber(reserved_s) ~= wend then new_used = used end
      new_used = math.max(0, new_used)
    end
    if mode ~= "force" and mode ~= "settle" and new_used > limit then
      ok = 0
      retry = (cost > limit) and -1 or (wend - now)
      new_used = used
    end
    if mode == "check" then new_used = used end
    reset_at = wend
    usage = new_used
    if ok == 1 and new_used ~= used then
      writes[#writes + 1] = {"c", key, wend, new_used, wend - now + 60000}
    end
  end

  if ok == 0 then ok_all = false end
  out[#out + 1] = triple(usage, reset_at - now, retry)
end

if mode == "check" or (mode == "admit" and not ok_all) then
  writes = {}
end
for _, w in ipairs(writes) do
  redis.call("SET", w[2], pair(w[3], w[4]), "PX", w[5])
end
if mode == "admit" and ok_all and has_resv then
  redis.call("SET", KEYS[1], "1", "PX", lease_s)
end

local head = (ok_all and "1 " or "0 ") .. fmt(now)
if #out == 0 then return head end
return head .. " " .. table.concat(out, " ")
