-- wrk script for a login storm: every request is POST /token with a correct password.
-- The user and password come from the environment (BENCH_USER, BENCH_PASSWORD); bench/auth.sh
-- sets them. Usage: wrk -t1 -c32 -d10s --timeout 15s -s bench/token.lua http://ADDR/token
local user = os.getenv("BENCH_USER") or "bench"
local password = os.getenv("BENCH_PASSWORD") or "bench-password"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"username":"%s","password":"%s"}', user, password)
