-- wrk script for bench/run: POSTs real Okta Telephony Inline Hook requests.
--
--   wrk -t1 -cN -dS --latency -s bench/okta.lua URL -- DATA MODE TOKENS EXPECT RATE
--
--   DATA    a Lua file written by bench/run: return {sms = {...}, voice = {...}, tokens = {...}}
--           (pre-generated Okta request bodies: distinct valid US numbers, distinct codes,
--           locales EN-US, es-MX, en, pt-BR; and pre-minted bearer tokens)
--   MODE    all | sms | voice          which bodies rotate (all: SMS and voice alternate)
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
-- Every request is pre-formatted in init(), so request() is a table lookup. response() counts
-- non-200 statuses and 200 answers without EXPECT; done() prints one machine-readable line
-- (BENCH {json}) with the counts, wrk's summary and latency percentiles in microseconds.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

-- thread globals (read by done() through thread:get)
bad_status = 0
bad_body = 0
ok = 0
first_bad = ""
statuses = ""

local reqs = {}
local n, i = 0, 0
local expect = "SUCCESSFUL"
local status_count = {}
local once = false

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

function init(args)
   local data = dofile(args[1])
   local mode = args[2] or "all"
   local tokmode = args[3] or "one"
   expect = args[4] or "SUCCESSFUL"
   local rate = tonumber(args[5] or "0") or 0

   local bodies = {}
   if mode == "sms" then
      bodies = data.sms
   elseif mode == "voice" then
      bodies = data.voice
   else
      for k = 1, math.max(#data.sms, #data.voice) do
         if data.sms[k] then table.insert(bodies, data.sms[k]) end
         if data.voice[k] then table.insert(bodies, data.voice[k]) end
      end
   end
   local tokens = { data.tokens[1] }
   local count = #bodies
   local first, cnt = string.match(tokmode, "^once:(%d+):(%d+)$")
   local reps = string.match(tokmode, "^repeat:(%d+)$")
   if reps then
      once = true
      count = tonumber(reps)
   elseif first then
      once = true
      tokens = {}
      for k = tonumber(first), tonumber(first) + tonumber(cnt) - 1 do
         local tk = data.tokens[k]
         if not tk then error("not enough tokens in DATA for " .. tokmode) end
         table.insert(tokens, tk)
      end
      count = #tokens
   end
   for k = 1, count do
      local body = bodies[(k - 1) % #bodies + 1]
      local tok = tokens[(k - 1) % #tokens + 1]
      reqs[k] = wrk.format("POST", "/v1/okta/telephony", {
         ["Content-Type"] = "application/json",
         ["Accept"] = "application/json",
         ["Authorization"] = "Bearer " .. tok,
      }, body)
   end
   n = count
   math.randomseed(os.time())
   i = once and 0 or math.random(n) - 1 -- once: from the first token; else from anywhere

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
   if i > n then
      if once then
         if t_end == 0 then -- every token sent: stop here, keep the rate measured so far
            t_end = now_us()
            done_at_end = ok + bad_status + bad_body
            wrk.thread:stop()
         end
         return reqs[n]
      end
      i = 1
   end
   if t_first == 0 then t_first = now_us() end
   return reqs[i]
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
