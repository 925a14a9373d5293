"""The training window of a retrain: which accepted customers a model learns from (plain functions).

A drift-triggered retrain must learn the present, so every window includes the newest load:
- `all`: every accepted customer with a known outcome (the default);
- `last_loads`: only the customers of the newest `last_loads` loads (older ones are left out);
- `recency`: everyone, weighted by recency: a customer of the k-th newest load (k = 0 newest) counts
  0.5 ** (k / half_life_loads) times as much.
Loads are ordered by their load time; a customer's load is the one of their latest accepted record.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

WEIGHT_COLUMN = "sample_weight"


class TrainingWindow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["all", "last_loads", "recency"] = "all"
    last_loads: int = Field(6, ge=1, description="last_loads: how many of the newest loads to train on.")
    half_life_loads: float = Field(3.0, gt=0, description="recency: loads after which a customer weighs half.")


def load_age(loaded_at: pd.Series) -> pd.Series:
    """0 for the newest load, 1 for the one before, ... (one rank per distinct load time)."""
    return loaded_at.rank(method="dense", ascending=False).astype(int) - 1


def apply_window(frame: pd.DataFrame, window: TrainingWindow, loaded_at: str = "loaded_at") -> pd.DataFrame:
    """The rows to train on; with `recency`, a `sample_weight` column that training passes to LightGBM."""
    if window.mode == "all" or frame.empty:
        return frame
    age = load_age(frame[loaded_at])
    if window.mode == "last_loads":
        return frame[age < window.last_loads]
    return frame.assign(**{WEIGHT_COLUMN: (0.5 ** (age / window.half_life_loads)).astype(np.float64)})
