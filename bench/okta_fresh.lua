-- wrk script for bench/run scenario p: every request new (a fresh eventId and a fresh code), so
-- a telehook with dedupe on sends each one instead of answering a duplicate.
--
--   wrk -t1 -cN -dS --latency -s bench/okta_fresh.lua URL -- DATA BASE EXPECT RATE CONNS
--
--   DATA    a Lua file written by bench/run: return {bodies = {...}, token = "..."}: Okta
--           request bodies with "@E@" where the eventId goes and "@C@" where the code goes
--   BASE    the first sequence number of this run; bench/run gives each run its own range,
--           so no two requests of one bench share an eventId, or a number + code + channel
--   EXPECT  SUCCESSFUL (okta.lua's response() checks that)
--   RATE, CONNS as in okta.lua
--
-- Request s (BASE, BASE+1, ...) takes body s mod #bodies (its number and channel), eventId
-- "bench" .. s (22 characters) and code 100000 + (s div #bodies) mod 900000: a number sees
-- the same code again only after #bodies * 900000 requests. response() and done() are
-- okta.lua's (loaded below), so wrk's BENCH line is the same.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "okta.lua")

local parts = {} -- per body: the text between the placeholders, and which placeholder follows
local seq, nb = 0, 0
local headers

function init(args)
   local data = dofile(args[1])
   seq = tonumber(args[2]) or 0
   -- args[3] (EXPECT) is for the reader: okta.lua's response() keeps its own default,
   -- "SUCCESSFUL", which is what a telehook answer carries
   local rate = tonumber(args[4] or "0") or 0
   for k, body in ipairs(data.bodies) do
      local p, pos = {}, 1
      while true do
         local a, b = string.find(body, "@[EC]@", pos)
         if not a then break end
         table.insert(p, string.sub(body, pos, a - 1))
         table.insert(p, string.sub(body, a, b))
         pos = b + 1
      end
      table.insert(p, string.sub(body, pos))
      parts[k] = p
   end
   nb = #parts
   headers = {
      ["Content-Type"] = "application/json",
      ["Accept"] = "application/json",
      ["Authorization"] = "Bearer " .. data.token,
   }
   math.randomseed(os.time())
   if rate > 0 then -- as okta.lua: a jittered mean of 1000 * conns / rate ms per connection
      local conns = tonumber(args[5] or "64") or 64
      local d = 1000.0 * conns / rate
      delay = function()
         local x = d * (0.5 + math.random())
         local f = math.floor(x)
         if math.random() < x - f then f = f + 1 end
         return f
      end
   end
end

local buf = {}

function request()
   local s = seq
   seq = seq + 1
   local p = parts[s % nb + 1]
   local ev = string.format("bench%017d", s)
   local code = tostring(100000 + math.floor(s / nb) % 900000)
   for k = 1, #p do
      local x = p[k]
      if x == "@E@" then x = ev elseif x == "@C@" then x = code end
      buf[k] = x
   end
   for k = #p + 1, #buf do buf[k] = nil end
   return wrk.format("POST", "/v1/okta/telephony", headers, table.concat(buf))
end
