-- Give an order's flash-sale stock back, at most once per order.
-- KEYS: 1 stock, 2 users, 3 released (hash order id -> ms), 4 journal, 5 meta
-- ARGV: 1 order id, 2 user, 3 qty, 4 now_ms
-- Returns 1: back on sale now; 0: already given back to the sale earlier;
-- 2: the sale is settled (its unsold stock went to the SKU): the caller returns this order's
--    units to the SKU instead (the database's stock_released flag makes that exactly once);
-- 3: the sale is not in Redis (load it and call again).
redis.call('HDEL', KEYS[4], ARGV[1])
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[5]) == 0 then return 3 end
if redis.call('HGET', KEYS[5], 'settled') == '1' then return 2 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
redis.call('INCRBY', KEYS[1], tonumber(ARGV[3]))
local left = redis.call('HINCRBY', KEYS[2], ARGV[2], -tonumber(ARGV[3]))
if left <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1
