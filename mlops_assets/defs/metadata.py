"""Turning results into metadata the Dagster UI renders."""

from __future__ import annotations

import base64

import dagster as dg
import pandas as pd


def markdown_table(frame: pd.DataFrame, float_format: str = ".4f") -> dg.MetadataValue:
    # object dtype: tabulate would otherwise upcast each row to float and print counts as 116.0000
    return dg.MetadataValue.md(frame.astype(object).to_markdown(index=False, floatfmt=float_format))


def png_image(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def float_metrics(metrics: dict[str, float], prefix: str) -> dict[str, dg.MetadataValue]:
    """Numeric metadata entries; the UI plots each one over the asset's materializations."""
    return {f"{prefix}{name}": dg.MetadataValue.float(float(value)) for name, value in metrics.items()}
