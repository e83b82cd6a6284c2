-- Rewrite a flash sale's Redis state from the database (the record of truth), whatever
-- Redis holds now: after a restart, a failover or a restore from an older snapshot, Redis
-- may have lost recent buys (stock, per-user counts, idempotency keys) while their orders
-- are in the database. The journal is kept (reservations not written yet; the caller
-- counts the ones without an order among the holders).
-- KEYS: 1 meta, 2 stock, 3 users, 4 idem, 5 journal, 6 released
-- ARGV: 1 start, 2 end, 3 limit, 4 price, 5 stock left, 6 expire_at (unix s), 7 closed (0/1),
--       8 settled (0/1), 9 cap, 10 returned at settlement ('' if not settled),
--       11 n holders, 12 n idempotency-only entries, 13 n released,
--       then 4 values per holder (user, qty, idempotency field, order id),
--       2 per idempotency-only entry (idempotency field, order id: orders that no longer
--       count against the limit but whose key still answers with them),
--       1 per order whose units went back on sale (order id).
for k = 1, 6 do if k ~= 5 then redis.call('DEL', KEYS[k]) end end
local nh, ni, nr = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local i = 14
for _ = 1, nh do
  redis.call('HINCRBY', KEYS[3], ARGV[i], tonumber(ARGV[i + 1]))
  redis.call('HSET', KEYS[4], ARGV[i + 2], ARGV[i + 3])
  i = i + 4
end
for _ = 1, ni do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, nr do
  redis.call('HSET', KEYS[6], ARGV[i], ARGV[6])
  i = i + 1
end
redis.call('SET', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], 'start', ARGV[1], 'end', ARGV[2], 'limit', ARGV[3],
           'price', ARGV[4], 'closed', ARGV[7], 'settled', ARGV[8], 'cap', ARGV[9])
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'returned', ARGV[10]) end
for k = 1, 6 do redis.call('EXPIREAT', KEYS[k], tonumber(ARGV[6])) end
return 1
