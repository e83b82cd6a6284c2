-- Reserve flash-sale stock for one buyer, atomically.
-- KEYS: 1 meta (hash), 2 stock (int), 3 users (hash user -> qty), 4 idem (hash), 5 journal (hash)
-- ARGV: 1 now_ms, 2 user, 3 qty, 4 idempotency field, 5 order id, 6 journal payload (JSON)
-- All keys share one hash tag ({...:fs:<id>}) so the script runs on Redis Cluster.
local existing = redis.call('HGET', KEYS[4], ARGV[4])
if existing then return {'dup', existing} end
local meta = redis.call('HMGET', KEYS[1], 'start', 'end', 'limit', 'closed')
if not meta[1] then return {'no_sale', ''} end
if meta[4] == '1' then return {'closed', ''} end
local now = tonumber(ARGV[1])
if now < tonumber(meta[1]) then return {'not_started', meta[1]} end
if now >= tonumber(meta[2]) then return {'ended', meta[2]} end
local qty = tonumber(ARGV[3])
local bought = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if bought + qty > tonumber(meta[3]) then return {'limit', tostring(bought)} end
local stock = tonumber(redis.call('GET', KEYS[2]) or '0')
if stock < qty then return {'sold_out', tostring(stock)} end
redis.call('DECRBY', KEYS[2], qty)
redis.call('HINCRBY', KEYS[3], ARGV[2], qty)
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[5], ARGV[5], ARGV[6])
return {'ok', tostring(stock - qty)}
