"""binance_sim package."""
