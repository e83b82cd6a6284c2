-- Load a flash sale into Redis from the database (the record of truth), unless present.
-- KEYS: 1 meta, 2 stock, 3 users, 4 idem, 5 journal, 6 released
-- ARGV: 1 start, 2 end, 3 limit, 4 price, 5 stock left, 6 expire_at (unix s), 7 closed (0/1),
--       8 settled (0/1), 9 cap (the sale's total stock; '' if unknown),
--       then 4 values per order counted against the per-user limit: user, qty,
--       idempotency field, order id.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[3], KEYS[4])
local i = 10
while i <= #ARGV do
  redis.call('HINCRBY', KEYS[3], ARGV[i], tonumber(ARGV[i + 1]))
  redis.call('HSET', KEYS[4], ARGV[i + 2], ARGV[i + 3])
  i = i + 4
end
redis.call('SET', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], 'start', ARGV[1], 'end', ARGV[2], 'limit', ARGV[3],
           'price', ARGV[4], 'closed', ARGV[7], 'settled', ARGV[8])
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'cap', ARGV[9]) end
for k = 1, 6 do redis.call('EXPIREAT', KEYS[k], tonumber(ARGV[6])) end
return 1
