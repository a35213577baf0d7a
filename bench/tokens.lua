-- wrk script of bench_server.py: each request carries the next token of a file.
--
--   wrk -t1 -c4 -d5s -s bench/tokens.lua URL -- MODE FILE THREADS
--
-- MODE "none" sends no Authorization header; "fresh" sends each line of FILE
-- once (thread k of THREADS takes lines k, k+THREADS, ...), so no token repeats
-- within a run unless the file runs out (then "wraps" counts the restarts and
-- bench_server.py discards the figure); "repeat" sends the first line on every
-- request. done() prints one line, "BENCH {json}", that bench_server.py reads.

local threads = {}
local count = 0

function setup(thread)
  thread:set("id", count)
  count = count + 1
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "none"
  tokens = {}
  n = 0
  i = 0
  used = 0
  wraps = 0
  if mode == "none" then
    fixed = wrk.format()
    return
  end
  local stride = tonumber(args[3] or "1")
  local k = 0
  for line in io.lines(args[2]) do
    if k % stride == id then
      n = n + 1
      tokens[n] = line
    end
    k = k + 1
  end
  if mode == "repeat" then
    fixed = wrk.format(nil, nil, {Authorization = "Bearer " .. tokens[1]})
  end
end

function request()
  used = used + 1
  if mode ~= "fresh" then
    return fixed
  end
  i = i + 1
  if i > n then
    i = 1
    wraps = wraps + 1
  end
  return wrk.format(nil, nil, {Authorization = "Bearer " .. tokens[i]})
end

function done(summary, latency, requests)
  local used_total, wraps_total, tokens_total = 0, 0, 0
  for _, thread in ipairs(threads) do
    used_total = used_total + thread:get("used")
    wraps_total = wraps_total + thread:get("wraps")
    tokens_total = tokens_total + thread:get("n")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "non_2xx_3xx": %d, "connect_errors": %d,'
      .. ' "read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %.0f,'
      .. ' "p99_us": %.0f, "tokens": %d, "tokens_sent": %d, "wraps": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), tokens_total, used_total, wraps_total))
end
