"""backfill package."""
