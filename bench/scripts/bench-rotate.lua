-- wrk script for scripts/bench: sends each request with the next Cookie header of a file,
-- round-robin, so that the load spreads over many sessions.
--
--   wrk -t1 -c32 -d5s -s scripts/bench-rotate.lua URL -- COOKIE_FILE
--
-- COOKIE_FILE holds one Cookie header value per line. Every request is formatted once, in
-- init, so that the per-request cost in Lua is a table lookup.

local requests = {}
local count = 0
local next_index = 0

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... -s bench-rotate.lua URL -- COOKIE_FILE")
  end
  for line in io.lines(path) do
    if line ~= "" then
      count = count + 1
      requests[count] = wrk.format(nil, nil, { Cookie = line })
    end
  end
  if count == 0 then
    error("no cookies in " .. path)
  end
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end
