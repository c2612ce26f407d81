"""The Lua scripts of the Redis ledger (`services.store.redisstore`): each state transition
and the event it appends run as one script, so the ledger and the log never disagree.

Every script takes the key namespace as ARGV[1] and builds its key names from it (the
keys of a task depend on its principal, which only the script reads: a single Redis
server or a primary with replicas, not Redis Cluster). Times come from the server's own
clock (TIME), so hosts with skewed clocks agree on leases and retry times; they are stored
as decimal seconds (the text is what every reader parses: the hash, the event and the
sorted sets hold the same value).

Keys (`ns` the namespace, `P` a principal, `ID` a task id):
    ns:t:ID         hash: the task (TaskRecord's fields; a missing field is None)
    ns:te:ID        list: the task's principal, then the seqs of its events in order (a
                    list of numbers costs ~10 bytes an event; a stream per task ~4.7 KB)
    ns:p:P          hash: head (event counter), tasks (task counter), epoch, floor
    ns:log:P        stream: the principal's events, entry `<seq>-0`: t, y, ts, a, d
    ns:pn:P         zset: the principal's task ids by pn (the task list)
    ns:ids:P        zset: the same ids, all scored 0 (ZRANGEBYLEX: id prefixes)
    ns:active:P     zset: the principal's queued and running task ids by pn
    ns:idem:P       hash: idempotency key -> task id
    ns:fin:P        zset: the principal's finished task ids by finished_at (activity)
    ns:n            string: the global task counter (TaskRecord.n)
    ns:queued       zset: queued task ids by n (including those waiting for a retry)
    ns:retries      zset: queued task ids waiting for a retry, by next_attempt_at
    ns:running      zset: running task ids by lease_until
    ns:leased:W     set: the running task ids leased to worker W
    ns:runnames     hash: task name -> how many of that name run (claim's `limit`)
    ns:done         zset: finished task ids by n (retention's `keep`)
    ns:fin          zset: finished task ids by finished_at (retention by age)
    ns:orphans      zset: ids of deleted tasks whose events remain, by finished_at
    ns:pruned       hash: principal -> pruned_through
"""

# Shared helpers, prepended to every script.
PRELUDE = r"""
local ns = ARGV[1]

local function clock()
  local t = redis.call('TIME')
  local sec, usec = tonumber(t[1]), tonumber(t[2])
  local text = t[1] .. '.' .. string.format('%06d', usec)
  return text, tonumber(text), sec * 1000000 + usec
end

-- The shortest text that reads back as the same double (as Python's repr does).
local function num(x)
  for _, f in ipairs({'%.15g', '%.16g', '%.17g'}) do
    local s = string.format(f, x)
    if tonumber(s) == x then return s end
  end
  return string.format('%.17g', x)
end

local function int(x) return string.format('%d', x) end

-- An optional argument: "0" for none, "1" followed by the value.
local function opt(s)
  if s ~= nil and string.sub(s, 1, 1) == '1' then return string.sub(s, 2) end
  return nil
end

local function load(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil, flat end
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t, flat
end

-- The principal's counters, created at a floor above any seq it could have had before
-- (the microseconds of the server's clock, or the log's own last id if higher), so a
-- lost or flushed dataset never numbers events again from 1: `pruned_through` is raised
-- to the floor, and a client resuming from an older cursor is told to reset.
local function principal(p, now_text, now_us)
  local pk = ns .. ':p:' .. p
  if redis.call('EXISTS', pk) == 1 then return pk end
  local floor = now_us
  local log = ns .. ':log:' .. p
  if redis.call('EXISTS', log) == 1 then
    local info = redis.call('XINFO', 'STREAM', log)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local last = tonumber(string.match(info[i + 1], '^(%d+)-'))
        if last > floor then floor = last end
      end
    end
  end
  local mark = tonumber(redis.call('HGET', ns .. ':pruned', p) or '0')
  if mark > floor then floor = mark end
  local tasks = 0
  local top = redis.call('ZREVRANGE', ns .. ':pn:' .. p, 0, 0, 'WITHSCORES')
  if top[2] then tasks = tonumber(top[2]) end
  redis.call('HSET', pk, 'head', int(floor), 'tasks', int(tasks), 'epoch', now_text,
             'floor', int(floor))
  redis.call('HSET', ns .. ':pruned', p, int(floor))
  return pk
end

-- Append an event to the principal's log and the task's index; returns the event as
-- the scripts answer it: {seq, type, principal, task id, attempt, data, ts}.
local function append(p, tid, etype, attempt, data, now_text, now_us)
  local pk = principal(p, now_text, now_us)
  local seq = redis.call('HINCRBY', pk, 'head', 1)
  local id = string.format('%d-0', seq)
  redis.call('XADD', ns .. ':log:' .. p, id, 't', tid, 'y', etype, 'ts', now_text,
             'a', int(attempt), 'd', data)
  local te = ns .. ':te:' .. tid
  if redis.call('EXISTS', te) == 0 then redis.call('RPUSH', te, p) end
  redis.call('RPUSH', te, int(seq))
  return {seq, etype, p, tid, attempt, data, now_text}
end

-- A running task leaves the running set, its worker's set and its name's count.
local function unlease(tid, t)
  redis.call('ZREM', ns .. ':running', tid)
  if t.lease_owner then redis.call('SREM', ns .. ':leased:' .. t.lease_owner, tid) end
  if redis.call('HINCRBY', ns .. ':runnames', t.name, -1) <= 0 then
    redis.call('HDEL', ns .. ':runnames', t.name)
  end
end

-- A task became terminal at `now_text`.
local function finished(tid, t, now_text)
  redis.call('ZREM', ns .. ':queued', tid)
  redis.call('ZREM', ns .. ':retries', tid)
  redis.call('ZREM', ns .. ':active:' .. t.principal, tid)
  redis.call('ZADD', ns .. ':done', t.n, tid)
  redis.call('ZADD', ns .. ':fin', now_text, tid)
  redis.call('ZADD', ns .. ':fin:' .. t.principal, now_text, tid)
end

local function running(t, attempt)
  return t ~= nil and t.state == 'running' and t.attempt == attempt
end
"""

# ARGV: ns, principal, id, name, args, max_attempts, max_lost, timeout?, idem?, data
# -> {0, existing task} | {1, n, pn, now, event}
CREATE = r"""
local p, tid = ARGV[2], ARGV[3]
local timeout, idem = opt(ARGV[8]), opt(ARGV[9])
if idem then
  local known = redis.call('HGET', ns .. ':idem:' .. p, idem)
  if known then
    local t, flat = load(ns .. ':t:' .. known)
    if t then return {0, flat} end
  end
end
local now_text, _, now_us = clock()
local pk = principal(p, now_text, now_us)
local n = redis.call('INCR', ns .. ':n')
local pn = redis.call('HINCRBY', pk, 'tasks', 1)
local key = ns .. ':t:' .. tid
redis.call('HSET', key, 'n', n, 'id', tid, 'principal', p, 'name', ARGV[4], 'args', ARGV[5],
           'state', 'queued', 'attempt', 0, 'max_attempts', ARGV[6], 'failures', 0, 'lost', 0,
           'uncharged', 0, 'max_lost', ARGV[7], 'cancel_requested', 0, 'created_at', now_text,
           'updated_at', now_text, 'pn', pn)
if timeout then redis.call('HSET', key, 'timeout', timeout) end
if idem then
  redis.call('HSET', key, 'idempotency_key', idem)
  redis.call('HSET', ns .. ':idem:' .. p, idem, tid)
end
redis.call('ZADD', ns .. ':pn:' .. p, pn, tid)
redis.call('ZADD', ns .. ':ids:' .. p, 0, tid)
redis.call('ZADD', ns .. ':active:' .. p, pn, tid)
redis.call('ZADD', ns .. ':queued', n, tid)
local ev = append(p, tid, 'queued', 0, ARGV[10], now_text, now_us)
return {1, n, pn, now_text, ev}
"""

# ARGV: ns, id, worker, lease_seconds, limit? -> {} | {task after, event}
CLAIM = r"""
local tid, worker = ARGV[2], ARGV[3]
local key = ns .. ':t:' .. tid
local t = load(key)
if t == nil or t.state ~= 'queued' then return {} end
local now_text, now, now_us = clock()
if t.next_attempt_at and tonumber(t.next_attempt_at) > now then return {} end
local limit = opt(ARGV[5])
if limit then
  local busy = tonumber(redis.call('HGET', ns .. ':runnames', t.name) or '0')
  if busy >= tonumber(limit) then return {} end
end
local attempt = tonumber(t.attempt) + 1
local until_text = num(now + tonumber(ARGV[4]))
redis.call('HSET', key, 'state', 'running', 'attempt', attempt, 'lease_owner', worker,
           'lease_until', until_text, 'started_at', now_text, 'updated_at', now_text)
redis.call('HDEL', key, 'progress', 'message', 'result', 'error', 'next_attempt_at')
redis.call('ZREM', ns .. ':queued', tid)
redis.call('ZREM', ns .. ':retries', tid)
redis.call('ZADD', ns .. ':running', until_text, tid)
redis.call('SADD', ns .. ':leased:' .. worker, tid)
redis.call('HINCRBY', ns .. ':runnames', t.name, 1)
local data = '{"attempt":' .. int(attempt)
if t.timeout then data = data .. ',"timeout":' .. t.timeout end
data = data .. '}'
local ev = append(t.principal, tid, 'started', attempt, data, now_text, now_us)
return {redis.call('HGETALL', key), ev}
"""

# ARGV: ns, id, attempt, progress?, message?, data -> {} | event
PROGRESS = r"""
local tid = ARGV[2]
local key = ns .. ':t:' .. tid
local got = redis.call('HMGET', key, 'state', 'attempt', 'principal')
if got[1] ~= 'running' or got[2] ~= ARGV[3] then return {} end
local now_text, _, now_us = clock()
local fraction, message = opt(ARGV[4]), opt(ARGV[5])
if fraction then redis.call('HSET', key, 'progress', fraction)
else redis.call('HDEL', key, 'progress') end
if message then redis.call('HSET', key, 'message', message)
else redis.call('HDEL', key, 'message') end
redis.call('HSET', key, 'updated_at', now_text)
return append(got[3], tid, 'progress', tonumber(ARGV[3]), ARGV[6], now_text, now_us)
"""

# ARGV: ns, id, attempt, data -> {} | event
OUTPUT = r"""
local tid = ARGV[2]
local got = redis.call('HMGET', ns .. ':t:' .. tid, 'state', 'attempt', 'principal')
if got[1] ~= 'running' or got[2] ~= ARGV[3] then return {} end
local now_text, _, now_us = clock()
return append(got[3], tid, 'output', tonumber(ARGV[3]), ARGV[4], now_text, now_us)
"""

# ARGV: ns, id, attempt, state, result?, error?, message ("-": unchanged, or opt),
#       progress?, event type, data -> {} | event
FINISH = r"""
local tid = ARGV[2]
local key = ns .. ':t:' .. tid
local t = load(key)
if not running(t, ARGV[3]) then return {} end
local now_text, _, now_us = clock()
local result, err, progress = opt(ARGV[5]), opt(ARGV[6]), opt(ARGV[8])
redis.call('HSET', key, 'state', ARGV[4], 'finished_at', now_text, 'updated_at', now_text)
redis.call('HDEL', key, 'lease_owner', 'lease_until')
if result then redis.call('HSET', key, 'result', result) else redis.call('HDEL', key, 'result') end
if err then redis.call('HSET', key, 'error', err) else redis.call('HDEL', key, 'error') end
if ARGV[7] ~= '-' then
  local message = opt(ARGV[7])
  if message then redis.call('HSET', key, 'message', message)
  else redis.call('HDEL', key, 'message') end
end
if progress then redis.call('HSET', key, 'progress', progress) end
unlease(tid, t)
finished(tid, t, now_text)
return append(t.principal, tid, ARGV[9], tonumber(ARGV[3]), ARGV[10], now_text, now_us)
"""

# ARGV: ns, id, attempt, delay, error, message, reason, delay as shown -> {} | event
RETRY_LATER = r"""
local tid = ARGV[2]
local key = ns .. ':t:' .. tid
local t = load(key)
if not running(t, ARGV[3]) then return {} end
local now_text, now, now_us = clock()
local at_text = num(now + math.max(0, tonumber(ARGV[4])))
local failures = tonumber(t.failures) + 1
redis.call('HSET', key, 'state', 'queued', 'error', ARGV[5], 'message', ARGV[6],
           'next_attempt_at', at_text, 'failures', failures, 'updated_at', now_text)
redis.call('HDEL', key, 'lease_owner', 'lease_until')
unlease(tid, t)
redis.call('ZADD', ns .. ':queued', t.n, tid)
redis.call('ZADD', ns .. ':retries', at_text, tid)
local attempt = tonumber(ARGV[3])
local shown = tonumber(t.max_attempts) + tonumber(t.uncharged)
local data = '{"reason":' .. cjson.encode(ARGV[7]) .. ',"next_attempt":' .. int(attempt + 1)
  .. ',"delay":' .. ARGV[8] .. ',"at":' .. at_text .. ',"error":' .. ARGV[5]
  .. ',"max_attempts":' .. int(shown) .. ',"lost_attempts":' .. t.lost .. '}'
return append(t.principal, tid, 'retrying', attempt, data, now_text, now_us)
"""

# An attempt ended without an outcome (TaskStore.lose / reap).
# ARGV: ns, id, attempt, stopped (0/1), detail?, check, owner?, lost message,
#       stopped message, cancelled message, worker_lost code
# check: "current" (the attempt is current), "owner" (... and still leased to `owner`),
#        "expired" (... and its lease has expired by the server's clock)
# -> {} | {task before, event}
LOSE = r"""
local tid = ARGV[2]
local key = ns .. ':t:' .. tid
local t, before = load(key)
if not running(t, ARGV[3]) then return {} end
local now_text, now, now_us = clock()
local check, owner = ARGV[6], opt(ARGV[7])
if check ~= 'current' and t.lease_owner ~= owner then return {} end
if check == 'expired' and t.lease_until and tonumber(t.lease_until) >= now then return {} end
local stopped, detail = ARGV[4] == '1', opt(ARGV[5])
local attempt = tonumber(t.attempt)
unlease(tid, t)
redis.call('HDEL', key, 'lease_owner', 'lease_until')
redis.call('HSET', key, 'updated_at', now_text)
if t.cancel_requested == '1' then
  redis.call('HSET', key, 'state', 'cancelled', 'finished_at', now_text, 'message', ARGV[10])
  finished(tid, t, now_text)
  local why = 'was lost'
  if stopped then why = 'stopped' end
  local data = '{"reason":' .. cjson.encode('the worker ' .. why
    .. ' while the task was being cancelled') .. '}'
  return {before, append(t.principal, tid, 'cancelled', attempt, data, now_text, now_us)}
end
local lost = tonumber(t.lost)
if not stopped then lost = lost + 1 end
if stopped or lost < math.min(tonumber(t.max_lost), 100) then
  local reason, message = 'worker_lost', ARGV[8]
  if stopped then reason, message = 'worker_stopped', ARGV[9] end
  redis.call('HSET', key, 'state', 'queued', 'message', message, 'lost', lost,
             'uncharged', tonumber(t.uncharged) + 1)
  redis.call('HDEL', key, 'next_attempt_at')
  redis.call('ZREM', ns .. ':retries', tid)
  redis.call('ZADD', ns .. ':queued', t.n, tid)
  local shown = tonumber(t.max_attempts) + tonumber(t.uncharged) + 1
  local data = '{"reason":"' .. reason .. '","next_attempt":' .. int(attempt + 1)
    .. ',"delay":0,"at":null,"max_attempts":' .. int(shown) .. ',"lost_attempts":' .. int(lost)
  if detail and detail ~= '' then data = data .. ',"detail":' .. cjson.encode(detail) end
  data = data .. '}'
  return {before, append(t.principal, tid, 'retrying', attempt, data, now_text, now_us)}
end
local times = int(lost) .. ' times'
if lost == 1 then times = 'once' end
local message = 'The process running this task was lost ' .. times .. '; giving up.'
if detail and detail ~= '' then message = message .. ' (Last time: ' .. detail .. '.)' end
local err = '{"code":' .. cjson.encode(ARGV[11]) .. ',"message":' .. cjson.encode(message) .. '}'
redis.call('HSET', key, 'state', 'failed', 'error', err, 'finished_at', now_text,
           'message', message, 'lost', lost)
finished(tid, t, now_text)
return {before, append(t.principal, tid, 'failed', attempt, '{"error":' .. err .. '}',
                       now_text, now_us)}
"""

# ARGV: ns, id, principal -> {} | {task after} | {task after, event}
CANCEL = r"""
local tid, p = ARGV[2], ARGV[3]
local key = ns .. ':t:' .. tid
local t, flat = load(key)
if t == nil or t.principal ~= p then return {} end
local now_text, _, now_us = clock()
local ev
if t.state == 'queued' then
  redis.call('HSET', key, 'state', 'cancelled', 'finished_at', now_text, 'updated_at', now_text,
             'cancel_requested', 1, 'message', 'Cancelled before it started')
  finished(tid, t, now_text)
  ev = append(p, tid, 'cancelled', tonumber(t.attempt),
              '{"reason":"cancelled before it started"}', now_text, now_us)
elseif t.state == 'running' and t.cancel_requested ~= '1' then
  redis.call('HSET', key, 'cancel_requested', 1, 'updated_at', now_text)
  ev = append(p, tid, 'cancel_requested', tonumber(t.attempt), '{}', now_text, now_us)
else
  return {flat}
end
return {redis.call('HGETALL', key), ev}
"""

# ARGV: ns, id, principal -> {} | {task as it was}
DELETE = r"""
local tid, p = ARGV[2], ARGV[3]
local key = ns .. ':t:' .. tid
local t, flat = load(key)
if t == nil or t.principal ~= p then return {} end
if t.state ~= 'succeeded' and t.state ~= 'failed' and t.state ~= 'cancelled' then
  return {flat}
end
redis.call('DEL', key)
redis.call('ZREM', ns .. ':pn:' .. p, tid)
redis.call('ZREM', ns .. ':ids:' .. p, tid)
redis.call('ZREM', ns .. ':done', tid)
redis.call('ZREM', ns .. ':fin', tid)
redis.call('ZREM', ns .. ':fin:' .. p, tid)
if t.idempotency_key and redis.call('HGET', ns .. ':idem:' .. p, t.idempotency_key) == tid then
  redis.call('HDEL', ns .. ':idem:' .. p, t.idempotency_key)
end
if redis.call('EXISTS', ns .. ':te:' .. tid) == 1 then
  redis.call('ZADD', ns .. ':orphans', t.finished_at or t.updated_at, tid)
end
return {flat}
"""

# ARGV: ns, worker, lease_seconds, ids... (none: every task leased to the worker)
RENEW = r"""
local worker = ARGV[2]
local ids = {}
if #ARGV > 3 then
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('SMEMBERS', ns .. ':leased:' .. worker)
end
local _, now = clock()
local until_text = num(now + tonumber(ARGV[3]))
local renewed = 0
for _, tid in ipairs(ids) do
  local key = ns .. ':t:' .. tid
  local got = redis.call('HMGET', key, 'state', 'lease_owner')
  if got[1] == 'running' and got[2] == worker then
    redis.call('HSET', key, 'lease_until', until_text)
    redis.call('ZADD', ns .. ':running', until_text, tid)
    renewed = renewed + 1
  end
end
return renewed
"""

# ARGV: ns, worker, which ("all" | "cancel") -> {id, attempt, ...}
LEASED = r"""
local worker = ARGV[2]
local out = {}
for _, tid in ipairs(redis.call('SMEMBERS', ns .. ':leased:' .. worker)) do
  local got = redis.call('HMGET', ns .. ':t:' .. tid, 'state', 'lease_owner', 'attempt',
                         'cancel_requested')
  if got[1] == 'running' and got[2] == worker and (ARGV[3] == 'all' or got[4] == '1') then
    out[#out + 1] = tid
    out[#out + 1] = got[3]
  end
end
return out
"""

# ARGV: ns -> {now, {id, owner, attempt, lease_until}...}
RUNNING = r"""
local now_text = clock()
local out = {now_text}
for _, tid in ipairs(redis.call('ZRANGE', ns .. ':running', 0, -1)) do
  local got = redis.call('HMGET', ns .. ':t:' .. tid, 'state', 'lease_owner', 'attempt',
                         'lease_until')
  if got[1] == 'running' then
    out[#out + 1] = {tid, got[2] or '', got[3], got[4] or ''}
  end
end
return out
"""

# ARGV: ns, unchanged_since? -> ids of queued tasks that may run now, by n
QUEUED = r"""
local _, now = clock()
local since = opt(ARGV[2])
local out = {}
for _, tid in ipairs(redis.call('ZRANGE', ns .. ':queued', 0, -1)) do
  local got = redis.call('HMGET', ns .. ':t:' .. tid, 'state', 'next_attempt_at', 'updated_at')
  if got[1] == 'queued' and (not got[2] or tonumber(got[2]) <= now)
      and (not since or tonumber(got[3]) < tonumber(since)) then
    out[#out + 1] = tid
  end
end
return out
"""

# ARGV: ns, principal, below? (pn), count, index ("pn": all, "active": queued and running)
# -> {task, task, ...} newest first
PAGE = r"""
local hi = '+inf'
if opt(ARGV[3]) then hi = '(' .. opt(ARGV[3]) end
local out = {}
local index = ns .. ':' .. ARGV[5] .. ':' .. ARGV[2]
local ids = redis.call('ZREVRANGEBYSCORE', index, hi, '-inf', 'LIMIT', 0, tonumber(ARGV[4]))
for _, tid in ipairs(ids) do
  local flat = redis.call('HGETALL', ns .. ':t:' .. tid)
  if #flat > 0 then out[#out + 1] = flat end
end
return out
"""

# ARGV: ns, id, after, limit, principal? -> {{principal, entry id, fields}...}
TASK_EVENTS = r"""
local te, after, want = ns .. ':te:' .. ARGV[2], tonumber(ARGV[3]), opt(ARGV[5])
local p = redis.call('LINDEX', te, 0)
if not p or (want and want ~= p) then return {} end
-- The first seq above `after`: a binary search over the list (its seqs increase).
local lo, hi = 1, redis.call('LLEN', te)
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  if tonumber(redis.call('LINDEX', te, mid)) <= after then lo = mid + 1 else hi = mid end
end
local out = {}
local log = ns .. ':log:' .. p
for _, seq in ipairs(redis.call('LRANGE', te, lo, lo + tonumber(ARGV[4]) - 1)) do
  local got = redis.call('XRANGE', log, seq .. '-0', seq .. '-0')
  if got[1] then out[#out + 1] = {p, got[1][1], got[1][2]} end
end
return out
"""

# ARGV: ns, principal, start, end, offset, count -> {name, state, started_at, finished_at, ...}
ACTIVITY = r"""
local ids = redis.call('ZRANGEBYSCORE', ns .. ':fin:' .. ARGV[2], ARGV[3], '(' .. ARGV[4],
                       'LIMIT', tonumber(ARGV[5]), tonumber(ARGV[6]))
local out = {}
for _, tid in ipairs(ids) do
  local got = redis.call('HMGET', ns .. ':t:' .. tid, 'name', 'state', 'started_at',
                         'finished_at')
  if got[1] then
    out[#out + 1] = got[1]
    out[#out + 1] = got[2]
    out[#out + 1] = got[3] or ''
    out[#out + 1] = got[4] or ''
  end
end
return {#ids, out}
"""

# Retention: one batch (TaskStore.prune_batch).
# ARGV: ns, finished_before?, keep?, limit -> {tasks, events}
PRUNE = r"""
local before, keep, limit = opt(ARGV[2]), opt(ARGV[3]), tonumber(ARGV[4])
local marks = {}
local events = 0

-- Delete a task's events from its principal's log and its own index.
local function drop_events(tid)
  local te = ns .. ':te:' .. tid
  local p = redis.call('LINDEX', te, 0)
  if not p then return end
  local ids = {}
  for _, seq in ipairs(redis.call('LRANGE', te, 1, -1)) do
    ids[#ids + 1] = seq .. '-0'
    if tonumber(seq) > (marks[p] or 0) then marks[p] = tonumber(seq) end
  end
  for i = 1, #ids, 500 do
    events = events + redis.call('XDEL', ns .. ':log:' .. p,
                                 unpack(ids, i, math.min(i + 499, #ids)))
  end
  redis.call('DEL', te)
end

local chosen, seen = {}, {}
local function choose(tid)
  if not seen[tid] then
    seen[tid] = true
    chosen[#chosen + 1] = {tonumber(redis.call('ZSCORE', ns .. ':done', tid)), tid}
  end
end
if keep then
  local extra = redis.call('ZCARD', ns .. ':done') - tonumber(keep)
  if extra > 0 then
    for _, tid in ipairs(redis.call('ZRANGE', ns .. ':done', 0, math.min(extra, limit) - 1)) do
      choose(tid)
    end
  end
end
if before then
  for _, tid in ipairs(redis.call('ZRANGEBYSCORE', ns .. ':fin', '-inf', '(' .. before,
                                  'LIMIT', 0, limit)) do
    choose(tid)
  end
end
table.sort(chosen, function(a, b) return a[1] < b[1] end)
local tasks = 0
for i = 1, math.min(#chosen, limit) do
  local tid = chosen[i][2]
  local key = ns .. ':t:' .. tid
  local t = load(key)
  if t then
    local p = t.principal
    drop_events(tid)
    redis.call('DEL', key)
    redis.call('ZREM', ns .. ':pn:' .. p, tid)
    redis.call('ZREM', ns .. ':ids:' .. p, tid)
    redis.call('ZREM', ns .. ':fin:' .. p, tid)
    if t.idempotency_key and redis.call('HGET', ns .. ':idem:' .. p, t.idempotency_key) == tid then
      redis.call('HDEL', ns .. ':idem:' .. p, t.idempotency_key)
    end
    tasks = tasks + 1
  end
  redis.call('ZREM', ns .. ':done', tid)
  redis.call('ZREM', ns .. ':fin', tid)
end
-- The events of tasks the ledger no longer has ("clear finished"), by the same age.
if before and tasks < limit then
  for _, tid in ipairs(redis.call('ZRANGEBYSCORE', ns .. ':orphans', '-inf', '(' .. before,
                                  'LIMIT', 0, limit - tasks)) do
    drop_events(tid)
    redis.call('ZREM', ns .. ':orphans', tid)
  end
end
for p, through in pairs(marks) do
  local old = tonumber(redis.call('HGET', ns .. ':pruned', p) or '0')
  if through > old then redis.call('HSET', ns .. ':pruned', p, int(through)) end
end
return {tasks, events}
"""
