-- wrk script: POST /checkout/o<n> with a distinct n per request, and a tally of the answers.
--
-- Arguments (after `--`): FIRST PER_THREAD. Thread t sends o<FIRST + t*PER_THREAD>,
-- o<FIRST + t*PER_THREAD + 1>, ... so no id repeats, within a run or across runs that are
-- given disjoint ranges. A thread that uses up its range sends /checkout/exhausted (a 404),
-- counted in "exhausted". `done` prints one line of JSON, prefixed with BENCH-RESULT.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("thread_index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local first = tonumber(args[1])
  local per_thread = tonumber(args[2])
  next_id = first + thread_index * per_thread
  last_id = next_id + per_thread - 1
  statuses = {}
  unexpected_400 = 0
  exhausted = 0
end

function request()
  local path
  if next_id > last_id then
    exhausted = exhausted + 1
    path = "/checkout/exhausted"
  else
    path = "/checkout/o" .. next_id
    next_id = next_id + 1
  end
  return wrk.format("POST", path)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 400 and not string.find(body, "Invalid shipping address", 1, true) then
    unexpected_400 = unexpected_400 + 1
  end
end

function done(summary, latency, requests)
  local totals = {}
  local bad, drained = 0, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + count
    end
    bad = bad + thread:get("unexpected_400")
    drained = drained + thread:get("exhausted")
  end
  local parts = {}
  for status, count in pairs(totals) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests": %d, "duration_us": %d, "statuses": {%s}, '
      .. '"unexpected_400": %d, "exhausted": %d, '
      .. '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
      .. '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    summary.requests, summary.duration, table.concat(parts, ", "),
    bad, drained, e.connect, e.read, e.write, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
