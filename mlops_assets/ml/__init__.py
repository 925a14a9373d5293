"""Pure ML and statistics: no Dagster imports, so every function runs in a notebook or a unit test."""
