-- Change a flash sale's end, per-user limit and total stock atomically with buys.
-- KEYS: 1 meta, 2 stock
-- ARGV: 1 end ms, 2 limit, 3 new total stock (cap), 4 the total before (if meta has no cap),
--       5 now_ms, 6 mode: 'edit' (refused once closed, settled or ended) or 'sync' (make
--       Redis match the database, used by reconciliation), 7 closed (0/1, sync only)
-- The stock key changes by (new cap - old cap), never below zero: what buyers hold stays
-- held. Returns {status, stock}: ok, no_sale, closed, settled, ended, held (the decrease is
-- larger than the unsold stock; value = unsold stock).
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_sale', '0'} end
local meta = redis.call('HMGET', KEYS[1], 'end', 'closed', 'settled', 'cap')
local stock = tonumber(redis.call('GET', KEYS[2]) or '0')
local sync = ARGV[6] == 'sync'
if meta[3] == '1' and not sync then return {'settled', tostring(stock)} end
if meta[2] == '1' and not sync then return {'closed', tostring(stock)} end
if not sync and tonumber(ARGV[5]) >= tonumber(meta[1]) then
  return {'ended', tostring(stock)}
end
local cap = tonumber(meta[4] or ARGV[4])
local delta = tonumber(ARGV[3]) - cap
if meta[3] == '1' then delta = 0 end
if stock + delta < 0 then
  if not sync then return {'held', tostring(stock)} end
  delta = -stock
end
if delta ~= 0 then redis.call('INCRBY', KEYS[2], delta) end
redis.call('HSET', KEYS[1], 'end', ARGV[1], 'limit', ARGV[2], 'cap', ARGV[3])
if sync then redis.call('HSET', KEYS[1], 'closed', ARGV[7]) end
return {'ok', tostring(stock + delta)}
