-- wrk script: refresh-token chains, POST /v1/auth/refresh. Each refresh needs the refresh token
-- the previous one returned (the old one stops working; presenting it again ends the session),
-- so a session is a strictly sequential chain. Run with as many threads as connections
-- (-tN -cN): each wrk thread has its own Lua state and one connection, so it carries its own
-- session's token forward from each response body to the next request, one request at a time.
-- REFRESH_TOKENS_FILE holds one refresh token per line (one login per session); thread i takes
-- line i. bench/auth.sh writes it.
-- Usage: REFRESH_TOKENS_FILE=tokens.txt wrk -t8 -c8 -d10s -s bench/refresh.lua http://ADDR/v1/auth/refresh
local tokens = {}
local file = assert(io.open(os.getenv("REFRESH_TOKENS_FILE") or "", "r"), "REFRESH_TOKENS_FILE")
for line in file:lines() do
    if line ~= "" then tokens[#tokens + 1] = line end
end
file:close()

local next_token = 0
function setup(thread)
    next_token = next_token + 1
    assert(tokens[next_token], "fewer refresh tokens than wrk threads")
    thread:set("refresh_token", tokens[next_token])
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
    return wrk.format(nil, nil, nil, '{"refresh_token":"' .. refresh_token .. '"}')
end

response = function(status, headers, body)
    if status == 200 then
        local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
        if token then refresh_token = token end
    end
end
