-- wrk script for bench/run: POSTs real Okta Telephony Inline Hook requests.
--
--   wrk -t1 -cN -dS --latency -s bench/okta.lua URL -- DATA MODE TOKENS EXPECT RATE
--
--   DATA    a Lua file written by bench/run: return {mix = {...}, tokens = {...}}
--           (the traffic mix of bench/mix.py: countries with their number stems and locales, a
--           schedule of countries and channels; pre-minted bearer tokens)
--   MODE    all | sms | voice          the schedule's requests, or its SMS or voice ones only
--   TOKENS  one | once:FIRST:COUNT | repeat:COUNT
--                                      one bearer token for every request; or tokens FIRST ..
--                                      FIRST+COUNT-1 of DATA each used once (a new token per
--                                      request): when they run out the thread stops sending and
--                                      done() reports the rate measured until then (active_*);
--                                      repeat: token 1 for COUNT requests, then stop likewise
--                                      (the same shape of run as once:, with the cache hit)
--   EXPECT  a substring every 200 answer must contain (SUCCESSFUL; MessageId for nginx-proxy)
--   RATE    0, or a total request rate to pace the connections to (delay() per connection)
--
-- Every request is new (make_gen: a new eventId, code, number and user), built in request() from
-- pieces formatted once in init(): a few string operations per request. response() counts
-- non-200 statuses and 200 answers without EXPECT; done() prints one machine-readable line
-- (BENCH {json}) with the counts, wrk's summary and latency percentiles in microseconds.

local threads = {}

-- thread globals (read by done() through thread:get)
bad_status = 0
bad_body = 0
ok = 0
first_bad = ""
statuses = ""

local n, i = 0, 0
local expect = "SUCCESSFUL"
local status_count = {}
local once = false
local tokens = {}
local head = ""      -- the request line and headers up to the bearer token
local gen            -- makes the body of request k (every one new: see make_gen)

-- a monotonic clock for the token-once mode (LuaJIT's ffi)
local ffi = require("ffi")
ffi.cdef [[
   typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
   int clock_gettime(int clk, bench_timespec *ts);
]]
local function now_us()
   local t = ffi.new("bench_timespec")
   ffi.C.clock_gettime(1, t)
   return tonumber(t.tv_sec) * 1e6 + tonumber(t.tv_nsec) / 1e3
end
t_first = 0
t_end = 0
done_at_end = 0

-- Request k (k = 1, 2, ...) of this thread: slot k of the mix's schedule gives the country and
-- the channel; the country's own counter picks the number (stem, then a suffix scrambled over
-- 0000..9999, so numbers repeat only after every stem of the country is used: hundreds of
-- thousands of requests); the user is k modulo mix.users; the eventId and the code are new on
-- every request. mode "sms" / "voice" keeps the schedule's slots of that channel only.
local function make_gen(mix, mode, tid)
   local sched = {}
   for _, s in ipairs(mix.schedule) do
      if mode == "all" or (mode == "sms") == (s[2] == "SMS") then table.insert(sched, s) end
   end
   local suffixes, users = mix.suffixes, mix.users
   -- every run (a new wrk) starts at a random point of every sequence: a run never repeats the
   -- eventIds, codes or (number, code) pairs of the one before it
   local cnt, fcnt = {}, {}
   for c, country in ipairs(mix.countries) do
      cnt[c] = math.random(0, #country.mobile * suffixes - 1)
      fcnt[c] = math.random(0, #country.fixed * suffixes - 1)
   end
   local k0 = math.random(0, 2 ^ 30)
   local tag = string.format("%02d%06d", tid % 100, math.random(0, 999999))
   local p1 = '{"eventId":"bench'
   local p2 = '","eventTime":"'
   local p2b = '","eventType":"com.okta.telephony.provider",' ..
      '"eventTypeVersion":"1.0","contentType":"application/json","cloudEventVersion":"0.1",' ..
      '"source":"https://example.okta.com/api/v1/inlineHooks/calz6lVQA77AwFeEe0g3",' ..
      '"requestType":"com.okta.user.telephony.mfa-verification","data":{"context":{"request":' ..
      '{"id":"reqRgSk8IBBRhuo0YdlEDTmUw","method":"POST","url":{"value":' ..
      '"/api/v1/authn/factors/sms/verify"},"ipAddress":"127.0.0.1"}},"userProfile":' ..
      '{"firstName":"Test","lastName":"User","login":"user'
   local p3 = '@example.com","userId":"00u'
   local p4 = '"},"messageProfile":{"msgTemplate":"(HOOK)Your code is '
   local p5 = '","phoneNumber":"'
   local p6 = '","otpExpires":"'
   local p6b = '","deliveryChannel":"'
   -- eventTime now and otpExpires 4 min 55 s later, as Okta sends them (its codes live about
   -- 5 minutes: the dedupe window), formatted once a second
   local sec, t_event, t_expires = -1, "", ""
   local p7 = '","otpCode":"'
   local p8 = '","locale":"'
   local p9 = '"}}}'
   return function(k)
      k = k + k0
      local s = sched[(k - 1) % #sched + 1]
      local c, channel = s[1], s[2]
      local country = mix.countries[c]
      local stems, x
      if channel == "Voice" and k % 2 == 0 then -- half of the calls go to fixed lines
         stems, x = country.fixed, fcnt[c]
         fcnt[c] = x + 1
      else
         stems, x = country.mobile, cnt[c]
         cnt[c] = x + 1
      end
      local stem = stems[math.floor(x / suffixes) % #stems + 1]
      local number = stem .. string.format("%04d", (x * 7919 + 1234) % suffixes)
      local u = (k * 7 + tid * 104729) % users
      local otp = tostring((k * 7919 + tid * 6007 + 104729) % 900000 + 100000)
      local locs = country.locales
      local t = os.time()
      if t ~= sec then
         sec = t
         t_event = os.date("!%Y-%m-%dT%H:%M:%S.000Z", t)
         t_expires = os.date("!%Y-%m-%dT%H:%M:%S.000Z", t + 295)
      end
      return table.concat({ p1, tag, string.format("%012d", k), p2, t_event, p2b, u, p3,
         string.format("%017d", u), p4, otp, p5, number, p6, t_expires, p6b, channel, p7, otp,
         p8, locs[x % #locs + 1], p9 })
   end
end

local nthreads = 0
function setup(thread)
   nthreads = nthreads + 1
   table.insert(threads, thread)
   thread:set("tid", nthreads)
end

function init(args)
   local data = dofile(args[1])
   local mode = args[2] or "all"
   local tokmode = args[3] or "one"
   expect = args[4] or "SUCCESSFUL"
   local rate = tonumber(args[5] or "0") or 0

   math.randomseed(math.floor(now_us()) % 2147483647 + (tid or 0))
   gen = make_gen(data.mix, mode, tid or 1)
   tokens = { data.tokens[1] }
   n = 0
   local first, cnt = string.match(tokmode, "^once:(%d+):(%d+)$")
   local reps = string.match(tokmode, "^repeat:(%d+)$")
   if reps then
      once = true
      n = tonumber(reps)
   elseif first then
      once = true
      tokens = {}
      for k = tonumber(first), tonumber(first) + tonumber(cnt) - 1 do
         local tk = data.tokens[k]
         if not tk then error("not enough tokens in DATA for " .. tokmode) end
         table.insert(tokens, tk)
      end
      n = #tokens
   end
   -- the headers but the token and the length, formatted once (wrk.format adds Host)
   local h = wrk.format("POST", "/v1/okta/telephony",
      { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }, nil)
   head = string.sub(h, 1, -3) .. "Authorization: Bearer "

   if rate > 0 then
      -- wrk waits delay() ms after each answer before the connection's next request: a mean
      -- of 1000 * connections / rate ms per connection gives about RATE requests/s in total.
      -- wrk's delays are whole milliseconds: jitter (0.5x-1.5x) and round at random so the
      -- mean is right and the connections do not fire in lockstep.
      local conns = tonumber(args[6] or "64") or 64
      local d = 1000.0 * conns / rate
      delay = function()
         local x = d * (0.5 + math.random())
         local f = math.floor(x)
         if math.random() < x - f then f = f + 1 end
         return f
      end
   end
end

function request()
   i = i + 1
   if once and i > n then
      if t_end == 0 then -- every token sent: stop here, keep the rate measured so far
         t_end = now_us()
         done_at_end = ok + bad_status + bad_body
         wrk.thread:stop()
      end
   end
   if t_first == 0 then t_first = now_us() end
   local body = gen(i)
   local tok = tokens[(i - 1) % #tokens + 1]
   return head .. tok .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
end

function response(status, headers, body)
   if status ~= 200 then
      bad_status = bad_status + 1
      status_count[status] = (status_count[status] or 0) + 1
      local s = {}
      for k, v in pairs(status_count) do table.insert(s, k .. ":" .. v) end
      statuses = table.concat(s, ",")
      if first_bad == "" then first_bad = status .. " " .. string.sub(body or "", 1, 300) end
   elseif not string.find(body or "", expect, 1, true) then
      bad_body = bad_body + 1
      if first_bad == "" then first_bad = status .. " " .. string.sub(body or "", 1, 300) end
   else
      ok = ok + 1
   end
end

local function jstr(s)
   s = string.gsub(s, '[%c"\\]', function(c)
      if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
      return string.format("\\u%04x", string.byte(c))
   end)
   return '"' .. s .. '"'
end

function done(summary, latency, requests)
   local bs, bb, okc, fb, st = 0, 0, 0, "", ""
   local active_us, active_req = 0, 0
   for _, t in ipairs(threads) do
      local te, tf = t:get("t_end") or 0, t:get("t_first") or 0
      if te > 0 and tf > 0 then
         active_us = active_us + (te - tf)
         active_req = active_req + (t:get("done_at_end") or 0)
      end
      bs = bs + (t:get("bad_status") or 0)
      bb = bb + (t:get("bad_body") or 0)
      okc = okc + (t:get("ok") or 0)
      if fb == "" then fb = t:get("first_bad") or "" end
      if st == "" then st = t:get("statuses") or "" end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"duration_us":%d,"requests":%d,"bytes":%d,"ok":%d,"bad_status":%d,"bad_body":%d,' ..
      '"statuses":%s,"first_bad":%s,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
      '"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"active_us":%d,"active_requests":%d}\n',
      summary.duration, summary.requests, summary.bytes, okc, bs, bb, jstr(st), jstr(fb),
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), active_us, active_req))
end
