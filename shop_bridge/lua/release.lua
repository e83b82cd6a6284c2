-- Put a cancelled order's stock back on sale, at most once per order.
-- KEYS: 1 stock, 2 users, 3 released (hash order id -> ms), 4 journal
-- ARGV: 1 order id, 2 user, 3 qty, 4 now_ms
redis.call('HDEL', KEYS[4], ARGV[1])
if redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[4]) == 0 then return 0 end
redis.call('INCRBY', KEYS[1], tonumber(ARGV[3]))
local left = redis.call('HINCRBY', KEYS[2], ARGV[2], -tonumber(ARGV[3]))
if left <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1
