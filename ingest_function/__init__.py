"""ingest_function package."""
