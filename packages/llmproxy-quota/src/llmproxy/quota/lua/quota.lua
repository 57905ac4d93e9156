-- llmproxy-quota: every limit of one request, evaluated atomically in one round trip.
--
-- Numbers travel as big-endian 64-bit integers (Redis's struct library): parsing and formatting them as text
-- cost the script about a third of its time (measured). Integers stay exact below 2^53.
--
-- KEYS[1] the tenant's state: a HASH with one field per limit, one per unsettled reservation, and "_expires", the
--         hash's own expiry (ms since the epoch), so that the TTL is extended only when a write needs it
-- ARGV[1] one string (every argument costs the client's encoder more than its bytes do): the header, the
--         reservation's field, each limit's field, then each limit's figures. The header ">BBi8i8i8i8i8":
--   mode:        1 admit   all-or-nothing: consume every limit or none; hold the reservation (if any)
--                2 check   dry run: evaluate, write nothing, report the state before the cost
--                3 force   consume every limit unconditionally (increment)
--                4 settle  delete the reservation; if it was held (its lease not run out), charge/refund the
--                          signed costs
--   n:           the number of limits
--   lease:       the reservation's lifetime in ms (admit)
--   costs:       of each request limit, of each token limit and of each spend budget (micro-units of
--                currency; all three signed when settling)
--   now:         ms since the epoch, or -1 to use Redis TIME (so gateway instances with skewed clocks agree)
--         The reservation's field ">Hc0" (2-byte length, bytes; empty when none), then each limit's field
--         ">Hc0", then each limit's figures ">BBi8i8i8i8": kind (0 GCRA, 1 calendar day, 2 calendar month),
--         unit (0 requests, 1 tokens, 2 spend), limit, burst, period ms, window end ms. A day/month budget
--         reads its "burst" as its soft threshold (spend only; 0: none) and its "period" as the UTC offset of
--         its calendar (ms; 0: UTC). Window end (settle only, else 0): a
--         day/month budget's window the reserved cost was counted in; a GCRA's charge end, the field's TAT right
--         after the admit (ms, rounded up): a refund is capped by what of the reservation's charge has not drained
--
-- GCRA field ">i8i8" tat_ms, rem: the theoretical arrival time TAT = tat_ms + rem / limit, kept exact.
-- Budget field ">i8i8" window end ms, used: a budget whose window is not the current one counts as 0; a spend
-- budget's ">i8i8i8" adds 1 once its soft threshold was reached in that window (so it alerts once a window),
-- and a spend budget overrun in the window just ended starts the next one with the overrun as its debt.
-- Reservation field ">i8" the end of its lease (ms): an unsettled reservation, held until then.
-- Any of them is dead (the same as absent) once its first number lies in the past. When the script extends the
-- hash's expiry (about once an hour, or per day/month window) it deletes the dead fields, so a tenant's hash does
-- not collect the fields of API keys and endpoints no longer used, nor of reservations never settled.
-- Returns ">i8i8" ok, now_ms, then per limit ">i8i8i8" usage, reset_in_ms, retry_after_ms; retry_after is 0 when
-- the limit admits and -1 when the cost can never fit. Remaining = (burst or limit) - usage. Then ">i8" the
-- spend budgets whose soft threshold this call reached (bit i-1 for limit i; written only if the call was).

local pack, unpack_
if struct then
  pack, unpack_ = struct.pack, struct.unpack
else
  -- the embedded backend (fakeredis) has no struct library: the codes this script uses, "B", "H", "i8", "c0"
  local byte, char = string.byte, string.char
  unpack_ = function(fmt, s, pos)
    pos = pos or 1
    local out, n = {}, 0
    for code in string.gmatch(fmt, "[BHic][08]?") do
      n = n + 1
      if code == "B" then
        out[n] = byte(s, pos)
        pos = pos + 1
      elseif code == "H" then
        local hi, lo = byte(s, pos, pos + 1)
        out[n] = hi * 256 + lo
        pos = pos + 2
      elseif code == "c0" then -- a string whose length is the previous number read (which it replaces)
        n = n - 1
        out[n] = string.sub(s, pos, pos + out[n] - 1)
        pos = pos + #out[n]
      else
        local b = {byte(s, pos, pos + 7)}
        if #b < 8 then error("data string too short") end
        local neg = b[1] >= 128
        local v = 0
        for j = 1, 8 do v = v * 256 + (neg and 255 - b[j] or b[j]) end
        out[n] = neg and -v - 1 or v
        pos = pos + 8
      end
    end
    out[n + 1] = pos
    return unpack(out, 1, n + 1)
  end
  pack = function(fmt, ...)
    local args = {...}
    local parts, n = {}, 0
    for code in string.gmatch(fmt, "[Bi]8?") do
      n = n + 1
      local x = args[n]
      if code == "B" then
        parts[n] = char(x)
      else
        local neg = x < 0
        local v = neg and -x - 1 or x
        local b = {}
        for j = 8, 1, -1 do
          local d = v % 256
          b[j] = neg and 255 - d or d
          v = (v - d) / 256
        end
        parts[n] = char(unpack(b))
      end
    end
    return table.concat(parts)
  end
end

local args = ARGV[1]
local mode, n, lease, rcost, tcost, scost, now, resv, pos = unpack_(">BBi8i8i8i8i8Hc0", args)
if now < 0 then
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local fields = {}
for i = 1, n do
  fields[i], pos = unpack_(">Hc0", args, pos)
end

local stored
if mode == 4 then
  -- settle: the reservation's field is read with the limits' (one HMGET), then deleted
  fields[n + 1] = resv
  stored = redis.call("HMGET", KEYS[1], "_expires", unpack(fields, 1, n + 1))
  local held = stored[n + 2]
  if held then redis.call("HDEL", KEYS[1], resv) end
  if not held or unpack_(">i8", held) <= now then
    return pack(">i8i8", 0, now)
  end
else
  stored = redis.call("HMGET", KEYS[1], "_expires", unpack(fields, 1, n))
end

local DAY = 86400000
local SLACK = 3600000 -- how far past the latest need the hash's expiry is set: extended about once an hour
-- the longest life given the hash (~31 years): what reaches PEXPIRE stays an integer in Lua's number formatting
-- (1e14 and above would be sent as "1e+14"), even for a rate pushed years ahead by increments under a tiny limit
local MAX_LIFE = 1e12
local floor, min, max = math.floor, math.min, math.max

-- exact integer division on doubles (all operands stay below 2^53)
local function idiv(a, b)
  local q = floor(a / b)
  local r = a - q * b
  if r < 0 then q = q - 1 elseif r >= b then q = q + 1 end
  return q
end

-- what is packed stays within int64: a TAT pushed far ahead by increments under a small limit, read under a
-- limit raised to 2^53, would otherwise overflow (and wrap) in the reply
local BOUND = 2 ^ 62

-- the first day (as days since the epoch) of the month holding ``day``, and of the month after it: Howard
-- Hinnant's civil_from_days (proleptic Gregorian, UTC), its floor divisions written as (a - a % b) / b (exact,
-- and Lua's % floors like the algorithm's divisions do): math.floor is a C call each, and this ran at
-- ~0.55 us a budget per call with them, ~0.25 us without (measured in the script)
local function month_bounds(day)
  local z = day + 719468
  local era = (z - z % 146097) / 146097
  local doe = z - era * 146097 -- the day of its 400-year era [0, 146096]
  local yoe = doe - (doe - doe % 1460) / 1460 + (doe - doe % 36524) / 36524 - (doe - doe % 146096) / 146096
  yoe = (yoe - yoe % 365) / 365 -- the year of the era [0, 399], years starting on March 1
  local doy = doe - 365 * yoe - (yoe - yoe % 4) / 4 + (yoe - yoe % 100) / 100 -- [0, 365] from March 1
  local t = 5 * doy + 2
  local mp = (t - t % 153) / 153 -- the month, March = 0 .. February = 11
  local s = 153 * mp + 2 -- the month's first day of the year is (s - s % 5) / 5
  local first = day - doy + (s - s % 5) / 5
  if mp < 11 then
    s = s + 153
    return first, day - doy + (s - s % 5) / 5
  end
  local y = yoe + era * 400 + 1 -- February: its civil year
  return first, first + ((y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) and 29 or 28)
end

local ok_all = true
local out = {}
local no = 0
local writes = {}
local nw = 0
local need = 0 -- the latest instant a written field must survive to
local alerts = 0 -- the spend budgets whose soft threshold this call reached (bits)

for i = 1, n do
  local kind, unit, limit, burst, period, end_ms
  kind, unit, limit, burst, period, end_ms, pos = unpack_(">BBi8i8i8i8", args, pos)
  local raw = stored[i + 1]
  local cost = unit == 0 and rcost or (unit == 1 and tcost or scost)
  local ok, reset_in, retry, usage = true, 0, 0, 0

  if kind == 0 then
    local tat, rem = now, 0
    if raw then
      tat, rem = unpack_(">i8i8", raw)
      if limit > 0 and rem >= limit then tat, rem = tat + idiv(rem, limit), rem % limit end
      if tat < now then tat, rem = now, 0 end
    end
    if limit <= 0 then
      if cost > 0 then ok, retry = false, -1 end
    else
      -- debt: how far TAT lies ahead of now, in ms x limit (exact)
      local debt = (tat - now) * limit + rem
      local new_debt = debt
      if cost >= 0 then
        new_debt = debt + cost * period
      else
        -- a refund returns only the part of the reservation's own charge not yet drained (its charge ended
        -- at <window end>, the TAT after its admit rounded up to the ms): what drained already was replaced
        -- by other requests' charges, which a refund must not erase; never below full capacity now
        local refund = min(-cost * period, (end_ms - now) * limit)
        if refund > 0 then new_debt = max(0, debt - refund) end
      end
      if new_debt > burst * period and mode < 3 then
        ok = false
        retry = (cost > burst) and -1 or -idiv(burst * period - new_debt, limit)
        new_debt = debt
      end
      if mode == 2 then new_debt = debt end
      -- the new TAT: now + ahead + part / limit (0 <= part < limit)
      local ahead = idiv(new_debt, limit)
      local part = new_debt - ahead * limit
      reset_in = part > 0 and ahead + 1 or ahead
      usage = -idiv(-new_debt, period)
      if ok and cost ~= 0 then
        writes[nw + 1] = fields[i]
        writes[nw + 2] = pack(">i8i8", min(now + ahead, BOUND), part)
        nw = nw + 2
        if now + reset_in + 1000 > need then need = now + reset_in + 1000 end
      end
    end
  else
    local off = period -- the calendar's UTC offset (ms)
    local day = floor((now + off) / DAY)
    local wstart, wend
    if kind == 1 then
      wstart, wend = day * DAY - off, (day + 1) * DAY - off
    else
      local first, after = month_bounds(day)
      wstart, wend = first * DAY - off, after * DAY - off
    end
    local used, alerted, carried = 0, 0, false
    if raw then
      local w, u, a
      if #raw >= 24 then w, u, a = unpack_(">i8i8i8", raw) else w, u = unpack_(">i8i8", raw) end
      if w == wend then
        used = u
        if a then alerted = a end
      elseif unit == 2 and w == wstart and u > limit then
        used, carried = u - limit, true -- the overrun of the window just ended: this one starts in debt
      end
    end
    local new_used = used + cost
    if cost < 0 then
      -- a refund only ever returns to the window the cost was reserved in
      if end_ms ~= wend then new_used = used end
      new_used = max(0, new_used)
    end
    if new_used > limit and mode < 3 then
      ok = false
      retry = (cost > limit) and -1 or (wend - now)
      new_used = used
    end
    if mode == 2 then new_used = used end
    reset_in = wend - now
    usage = new_used
    local alert = unit == 2 and ok and mode ~= 2 and burst > 0 and alerted == 0 and new_used >= burst
    if alert then
      alerted = 1
      alerts = alerts + 2 ^ (i - 1)
    end
    -- (a carried debt is written even at no cost: the old window's field may be dropped as dead any moment)
    if ok and (new_used ~= used or alert or carried) then
      writes[nw + 1] = fields[i]
      if unit == 2 then
        writes[nw + 2] = pack(">i8i8i8", wend, min(new_used, BOUND), alerted)
      else
        writes[nw + 2] = pack(">i8i8", wend, min(new_used, BOUND))
      end
      nw = nw + 2
      if wend + 60000 > need then need = wend + 60000 end
    end
  end

  if not ok then ok_all = false end
  out[no + 1], out[no + 2], out[no + 3] = usage, reset_in, retry
  no = no + 3
end
for j = 1, no do
  local x = out[j]
  if x > BOUND then out[j] = BOUND elseif x < -BOUND then out[j] = -BOUND end
end

if mode == 1 and ok_all and resv ~= "" then
  writes[nw + 1] = resv
  writes[nw + 2] = pack(">i8", now + lease)
  nw = nw + 2
  if now + lease > need then need = now + lease end
end
if not ((ok_all or mode ~= 1) and mode ~= 2) then alerts = 0 end -- nothing is written: nothing was reached
if nw > 0 and (ok_all or mode ~= 1) and mode ~= 2 then
  local expires = stored[1] and unpack_(">i8", stored[1])
  if expires and expires >= need then
    redis.call("HSET", KEYS[1], unpack(writes, 1, nw))
  else
    -- extend the hash's life (rarely: SLACK past the need); first drop the fields that are dead by now
    if expires then
      local all = redis.call("HGETALL", KEYS[1])
      local dead = {}
      for j = 1, #all, 2 do
        local value = all[j + 1]
        if all[j] ~= "_expires" and #value >= 8 and unpack_(">i8", value) < now then dead[#dead + 1] = all[j] end
      end
      if #dead > 0 then redis.call("HDEL", KEYS[1], unpack(dead)) end
    end
    local life = min(need + SLACK - now, MAX_LIFE)
    writes[nw + 1] = "_expires"
    writes[nw + 2] = pack(">i8", now + life)
    redis.call("HSET", KEYS[1], unpack(writes, 1, nw + 2))
    redis.call("PEXPIRE", KEYS[1], life) -- relative: "now" may be a test's clock
  end
end

out[no + 1] = alerts
return pack(">i8i8" .. string.rep("i8", no + 1), ok_all and 1 or 0, now, unpack(out, 1, no + 1))
