//! The Lua scripts cluster mode runs in Redis. Each is atomic on the server, so a lease or a
//! bucket is read and changed in one step whichever instance asks; time comes from Redis's own
//! clock (`TIME`), so instances with skewed clocks still agree.

/// Heartbeat: records this instance in the `instances` sorted set at Redis's time, drops
/// members silent for ten times the TTL, and answers the instances seen within the TTL.
/// KEYS[1] = instances set; ARGV[1] = instance id, ARGV[2] = TTL ms.
pub const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 10 * ttl)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - ttl, '+inf')
";

/// Deletes a lease only while it is still ours. KEYS[1] = lease; ARGV[1] = `instance|run|`.
pub const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Keeps a lease of ours alive (re-creating it if it expired while Redis was away); 0 when
/// another instance holds it. KEYS[1] = lease; ARGV[1] = `instance|run|`, ARGV[2] = the full
/// value, ARGV[3] = TTL ms.
pub const REFRESH: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
if string.sub(v, 1, #ARGV[1]) == ARGV[1] then
  if v ~= ARGV[2] then redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// Appends run events with their own ids (`0-<seq+1>`); an id already there (a retried batch)
/// is skipped, so appending is idempotent. Refreshes the TTL of the stream and of its meta key.
/// KEYS[1] = stream, KEYS[2] = meta; ARGV[1] = TTL ms, ARGV[2] = meta JSON, then triples of
/// (id, event JSON, "1" for the last event of the run or "0").
pub const APPEND: &str = r"
for i = 3, #ARGV, 3 do
  if ARGV[i + 2] == '1' then
    redis.pcall('XADD', KEYS[1], ARGV[i], 'e', ARGV[i + 1], 'x', '1')
  else
    redis.pcall('XADD', KEYS[1], ARGV[i], 'e', ARGV[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
return 1
";

/// A token bucket: takes `delta` tokens (or gives -`delta` back), refilled at `rate` per second
/// up to `burst`. Answers {1 taken | 0 refused, tokens left as a string}.
/// KEYS[1] = bucket; ARGV[1] = burst, ARGV[2] = rate per second, ARGV[3] = delta.
pub const BUCKET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local delta = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) / 1000 * rate)
local ok = 0
if delta > 0 then
  if tokens >= delta then tokens = tokens - delta; ok = 1 end
else
  tokens = math.min(burst, tokens - delta); ok = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {ok, tostring(tokens)}
";

/// Takes one of a key's run slots, counted per instance so the slots of an instance that died
/// are forgotten: the counts of instances not seen within the TTL are dropped first. Answers 1
/// (taken) or 0 (all `limit` slots busy).
/// KEYS[1] = slots hash (instance → runs), KEYS[2] = instances set; ARGV[1] = instance id,
/// ARGV[2] = limit, ARGV[3] = TTL ms.
pub const SLOT_TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = {}
for _, i in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now - tonumber(ARGV[3]), '+inf')) do live[i] = true end
live[ARGV[1]] = true
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for j = 1, #all, 2 do
  if live[all[j]] then n = n + tonumber(all[j + 1]) else redis.call('HDEL', KEYS[1], all[j]) end
end
if n >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
";

/// Gives a run slot back. KEYS[1] = slots hash; ARGV[1] = instance id.
pub const SLOT_GIVE: &str = r"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
";

/// A key's tokens of one day: created from ARGV[1] (what the database holds) when missing, then
/// ARGV[2] added; answers the total. KEYS[1] = counter; ARGV[3] = TTL ms.
pub const TOKENS: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) end
return redis.call('INCRBY', KEYS[1], ARGV[2])
";
