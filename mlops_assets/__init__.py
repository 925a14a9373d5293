"""Bank marketing MLOps platform.

Plain-Python ML and data logic lives in `mlops_assets.ml` and the top-level modules without Dagster
imports; the Dagster code location is `mlops_assets.definitions` (wiring in `mlops_assets.defs`).
"""
