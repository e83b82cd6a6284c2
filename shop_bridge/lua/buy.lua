-- Reserve flash-sale stock for one or more buyers of one sale, atomically.
-- KEYS: 1 meta (hash), 2 stock (int), 3 users (hash user -> qty), 4 idem (hash), 5 journal (hash)
-- ARGV: 6 values per buy, any number of buys (a micro-batch):
--       now_ms, user, qty, idempotency field, order id, journal payload (JSON)
-- Returns a flat array, two values per buy in ARGV order: status, value.
-- Each buy is checked and applied in turn exactly as if it ran alone (a later buy of the
-- batch sees the stock, per-user count and idempotency key of the earlier ones), and the
-- whole batch is one atomic script run.
-- All keys share one hash tag ({...:fs:<id>}) so the script runs on Redis Cluster.
if #ARGV == 0 or #ARGV % 6 ~= 0 then return redis.error_reply('buy: 6 values per buy') end
for i = 1, #ARGV, 6 do  -- check every buy before changing anything (no half-applied batch)
  local qty = tonumber(ARGV[i + 2])
  if not tonumber(ARGV[i]) or not qty or qty < 1 then
    return redis.error_reply('buy: now_ms and qty must be numbers, qty >= 1')
  end
end
local out = {}
local meta = redis.call('HMGET', KEYS[1], 'start', 'end', 'limit', 'closed')
local start, stop, limit = tonumber(meta[1]), tonumber(meta[2]), tonumber(meta[3])
local stock = nil
for i = 1, #ARGV, 6 do
  local status, value
  local existing = redis.call('HGET', KEYS[4], ARGV[i + 3])
  if existing then
    status, value = 'dup', existing
  elseif not meta[1] then
    status, value = 'no_sale', ''
  elseif meta[4] == '1' then
    status, value = 'closed', ''
  else
    local now = tonumber(ARGV[i])
    if now < start then
      status, value = 'not_started', meta[1]
    elseif now >= stop then
      status, value = 'ended', meta[2]
    else
      local user = ARGV[i + 1]
      local qty = tonumber(ARGV[i + 2])
      local bought = tonumber(redis.call('HGET', KEYS[3], user) or '0')
      if bought + qty > limit then
        status, value = 'limit', tostring(bought)
      else
        if stock == nil then stock = tonumber(redis.call('GET', KEYS[2]) or '0') end
        if stock < qty then
          status, value = 'sold_out', tostring(stock)
        else
          stock = stock - qty
          redis.call('DECRBY', KEYS[2], qty)
          redis.call('HINCRBY', KEYS[3], user, qty)
          redis.call('HSET', KEYS[4], ARGV[i + 3], ARGV[i + 4])
          redis.call('HSET', KEYS[5], ARGV[i + 4], ARGV[i + 5])
          status, value = 'ok', tostring(stock)
        end
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = value
end
return out
