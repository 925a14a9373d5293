"""Turning results into metadata the Dagster UI renders."""

from __future__ import annotations

import base64

import dagster as dg
import pandas as pd


def markdown_table(frame: pd.DataFrame, float_format: str = ".4f") -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=float_format))


def png_image(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def float_metrics(metrics: dict[str, float], prefix: str) -> dict[str, dg.MetadataValue]:
    """Numeric metadata entries; the UI plots each one over the asset's materializations."""
    return {f"{prefix}{name}": dg.MetadataValue.float(float(value)) for name, value in metrics.items()}
