-- The typed view over the raw external table (the lake's rows as BigQuery sees them).
-- Decimals: NUMERIC(38, 9), exact for up to 29 integer and 9 fractional digits (Binance spot
-- sends 8); never FLOAT64. Times: TIMESTAMP_MILLIS of the integer milliseconds, kept beside them.
SELECT
  symbol,
  `interval`,
  open_time,
  close_time,
  TIMESTAMP_MILLIS(open_time) AS open_ts,
  TIMESTAMP_MILLIS(close_time) AS close_ts,
  CAST(open AS NUMERIC(38, 9)) AS open,
  CAST(high AS NUMERIC(38, 9)) AS high,
  CAST(low AS NUMERIC(38, 9)) AS low,
  CAST(close AS NUMERIC(38, 9)) AS close,
  CAST(volume AS NUMERIC(38, 9)) AS volume,
  CAST(quote_volume AS NUMERIC(38, 9)) AS quote_volume,
  trades,
  CAST(taker_buy_base_volume AS NUMERIC(38, 9)) AS taker_buy_base_volume,
  CAST(taker_buy_quote_volume AS NUMERIC(38, 9)) AS taker_buy_quote_volume
FROM `${PROJECT}.${DATASET}.klines_raw`
