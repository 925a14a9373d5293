"""Synthetic customer populations with a known ground truth, for tests, demos and benchmarks.

Modules here import no Dagster. Nothing is imported at package level, so
`python -m mlops_assets.synthetic.swiss_bank` runs without a double-import warning.
"""
