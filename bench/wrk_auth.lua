-- wrk script for the read path: every request carries the bearer token in $BENCH_TOKEN.
-- The baseline ignores the header; it is sent to both so both parse the same bytes.
local token = os.getenv("BENCH_TOKEN")
if token ~= nil and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
