-- Settle a flash sale that is over: its unsold stock leaves the sale (the caller gives it
-- back to the SKU in the same database transaction that marks the sale settled).
-- KEYS: 1 meta, 2 stock, 3 journal
-- Returns {status, n}: ok (n units taken out now), settled (already done earlier; n is what
-- was taken then), busy (n reservations are not yet written as orders: try later),
-- no_sale (not in Redis: load it first).
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_sale', '0'} end
local meta = redis.call('HMGET', KEYS[1], 'settled', 'returned')
if meta[1] == '1' then return {'settled', meta[2] or '0'} end
local inflight = redis.call('HLEN', KEYS[3])
if inflight > 0 then return {'busy', tostring(inflight)} end
local left = tonumber(redis.call('GET', KEYS[2]) or '0')
if left > 0 then redis.call('DECRBY', KEYS[2], left) end
redis.call('HSET', KEYS[1], 'settled', '1', 'returned', tostring(left))
return {'ok', tostring(left)}
