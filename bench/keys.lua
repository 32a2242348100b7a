-- wrk script: api-key creation, POST /v1/admin/keys as an admin. The admin's access token comes
-- from the environment (ADMIN_TOKEN); each wrk thread stops after KEYS_PER_THREAD keys were
-- created (201), 0 or unset = no limit (the run ends at -d), and then appends a line to
-- KEYS_DONE_FILE (if set). A stopped thread does not end wrk's run (wrk sleeps the whole -d), so
-- bench/auth.sh waits for one line per thread and then sends wrk SIGINT, on which wrk stops and
-- prints its statistics, elapsed time included.
-- Usage: ADMIN_TOKEN=... KEYS_PER_THREAD=2500 wrk -t2 -c8 -d120s -s bench/keys.lua http://ADDR/v1/admin/keys
local token = os.getenv("ADMIN_TOKEN") or ""
local limit = tonumber(os.getenv("KEYS_PER_THREAD") or "0") or 0
local done_file = os.getenv("KEYS_DONE_FILE")
local created = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.body = '{"name":"bench"}'

response = function(status, headers, body)
    if status == 201 then
        created = created + 1
        if limit > 0 and created == limit then
            if done_file then
                local f = io.open(done_file, "a")
                if f then f:write("done\n") f:close() end
            end
            wrk.thread:stop()
        end
    end
end
