"""Data quality: row-level rules applied at ingestion, and Great Expectations suites run as checks.

No Dagster imports here; `mlops_assets.defs.quality` wires the suites into asset checks.
"""
