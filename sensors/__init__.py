"""Sensors that re-materialize models when data-quality, drift or performance checks fail."""
