-- Reserve flash-sale stock for one or more buyers of one sale, atomically.
-- KEYS: 1 meta (hash), 2 stock (int), 3 users (hash user -> qty), 4 idem (hash), 5 journal (hash)
-- ARGV[1]: the buys (a micro-batch) as one JSON array, one array per buy:
--          [now_ms, user, qty, idempotency field, order id, journal payload (a JSON string)]
--          One argument instead of six per buy: the client encodes one value per batch
--          instead of several hundred.
-- Returns one JSON array, two strings per buy in ARGV order: status, value.
-- Each buy is checked and applied in turn exactly as if it ran alone (a later buy of the
-- batch sees the stock, per-user count and idempotency key of the earlier ones), and the
-- whole batch is one atomic script run.
-- All keys share one hash tag ({...:fs:<id>}) so the script runs on Redis Cluster.
if #ARGV ~= 1 then return redis.error_reply('buy: one argument (a JSON array of buys)') end
local ok, buys = pcall(cjson.decode, ARGV[1])
if not ok or type(buys) ~= 'table' or #buys == 0 then
  return redis.error_reply('buy: the argument is not a JSON array of buys')
end
for _, b in ipairs(buys) do  -- check every buy before changing anything (no half-applied batch)
  if type(b) ~= 'table' or type(b[1]) ~= 'number' or type(b[2]) ~= 'string'
      or type(b[3]) ~= 'number' or b[3] < 1 or b[3] ~= math.floor(b[3])
      or type(b[4]) ~= 'string' or type(b[5]) ~= 'string' or type(b[6]) ~= 'string' then
    return redis.error_reply('buy: each buy is [now_ms, user, qty >= 1, idem, order id, journal]')
  end
end
local out = {}
local meta = redis.call('HMGET', KEYS[1], 'start', 'end', 'limit', 'closed')
local start, stop, limit = tonumber(meta[1]), tonumber(meta[2]), tonumber(meta[3])
local stock = nil
for _, b in ipairs(buys) do
  local status, value
  local existing = redis.call('HGET', KEYS[4], b[4])
  if existing then
    status, value = 'dup', existing
  elseif not meta[1] then
    status, value = 'no_sale', ''
  elseif meta[4] == '1' then
    status, value = 'closed', ''
  else
    local now = b[1]
    if now < start then
      status, value = 'not_started', meta[1]
    elseif now >= stop then
      status, value = 'ended', meta[2]
    else
      local user, qty = b[2], b[3]
      local bought = tonumber(redis.call('HGET', KEYS[3], user) or '0')
      if bought + qty > limit then
        status, value = 'limit', string.format('%d', bought)
      else
        if stock == nil then stock = tonumber(redis.call('GET', KEYS[2]) or '0') end
        if stock < qty then
          status, value = 'sold_out', tostring(stock)
        else
          stock = stock - qty
          redis.call('DECRBY', KEYS[2], qty)
          redis.call('HINCRBY', KEYS[3], user, qty)
          redis.call('HSET', KEYS[4], b[4], b[5])
          redis.call('HSET', KEYS[5], b[5], b[6])
          status, value = 'ok', string.format('%d', stock)
        end
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = value
end
return cjson.encode(out)
