"""Documents the ingest tests build in code (no binary fixtures to keep in sync)."""
