-- Debian's miltertest (libmilter's MTA side) against `relay milter` with the probe policy.
-- Run: miltertest -D port=PORT -s probe.lua ; any failed check raises an error (exit != 0).

-- miltertest prints no message for a Lua error: say it, then fail
local function fail(message)
   mt.echo("FAIL: " .. message)
   error(message)
end

local function open()
   local conn = mt.connect("inet:" .. port .. "@127.0.0.1", 20, 0.1)
   if conn == nil then fail("mt.connect() failed") end
   if mt.negotiate(conn, nil, nil, nil) ~= nil then fail("mt.negotiate() failed") end
   if mt.conninfo(conn, "mx.example", "192.0.2.7") ~= nil then fail("mt.conninfo() failed") end
   if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("connect not continued") end
   return conn
end

local function headers(conn, subject)
   for _, h in ipairs({{"From", "a@dienbien.gov.vn"}, {"To", "b@dienbien.gov.vn"},
                       {"Date", "Sun, 29 Nov 2026 10:00:00 +0700"}, {"Subject", subject}}) do
      if mt.header(conn, h[1], h[2]) ~= nil then fail("mt.header() failed") end
   end
   if mt.bodystring(conn, "Xin chao\r\n") ~= nil then fail("mt.bodystring() failed") end
   if mt.eom(conn) ~= nil then fail("mt.eom() failed") end
end

-- 1. tag: an added header that carries the SASL login from {auth_authen}
local conn = open()
mt.macro(conn, SMFIC_MAIL, "{auth_authen}", "nguyenvana")
if mt.mailfrom(conn, "<a@dienbien.gov.vn>") ~= nil then fail("mt.mailfrom() failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("MAIL not continued") end
if mt.rcptto(conn, "<b@dienbien.gov.vn>") ~= nil then fail("mt.rcptto() failed") end
headers(conn, "TAG me")
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("tagged message not continued") end
if not (mt.eom_check(conn, MT_HDRADD, "X-Probe", "tagged; auth=nguyenvana")
        or mt.eom_check(conn, MT_HDRADD, "X-Probe", " tagged; auth=nguyenvana")) then
   fail("X-Probe header not added")
end
mt.disconnect(conn)

-- 2. one recipient refused, the message still goes on; then a refusal at end of message
conn = open()
mt.mailfrom(conn, "<a@dienbien.gov.vn>")
mt.rcptto(conn, "<blocked@dienbien.gov.vn>")
if mt.getreply(conn) ~= SMFIR_REPLYCODE then fail("blocked recipient not refused") end
mt.rcptto(conn, "<b@dienbien.gov.vn>")
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("good recipient not continued") end
headers(conn, "please REJECT")
if mt.getreply(conn) ~= SMFIR_REPLYCODE then fail("message not refused") end
-- (the reply text is checked by the kilter client and through Postfix: miltertest's
-- MT_SMTPREPLY check compares one-line "CODE X.Y.Z TEXT" replies, ours have two lines)
mt.disconnect(conn)
mt.echo("miltertest: all checks passed")
