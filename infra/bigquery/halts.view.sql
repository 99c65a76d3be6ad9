-- Confirmed-empty ranges (exchange halts, contract 4), one row per range, with the stream taken
-- from the meta object's name (meta/binance_{symbol lowercased}_{interval}.empty.jsonl).
-- Readers ignore any part of a range that lies under a row of the klines view.
SELECT
  REGEXP_EXTRACT(_FILE_NAME, r'/meta/binance_(.+)_[^_]+\.empty\.jsonl$') AS symbol_lower,
  REGEXP_EXTRACT(_FILE_NAME, r'_([^_]+)\.empty\.jsonl$') AS `interval`,
  `from` AS from_open_time,
  `to` AS to_open_time,
  TIMESTAMP_MILLIS(`from`) AS from_ts,
  TIMESTAMP_MILLIS(`to`) AS to_ts
FROM `${PROJECT}.${DATASET}.halts_raw`
