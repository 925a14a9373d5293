"""Model artefacts: LightGBM's text format and the calibration map (JSON) plus a sha256, never pickle.

The text format holds only tree structure and numbers, and the calibration only numbers, so loading
an artefact cannot run code; the checksum covers both and catches any change between training and
scoring. `predict` is the one way scores are produced: raw score, then the stored calibration.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlops_assets.ml.training import FeatureSpec, predict_proba

if TYPE_CHECKING:
    import lightgbm as lgb


class ArtifactIntegrityError(RuntimeError):
    """The stored model text does not match its recorded checksum."""


_JSON_FIELDS = ("params", "metrics", "lineage", "reference_profile", "calibration")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def artifact_sha256(model_text: str, calibration: dict) -> str:
    """The checksum of what produces a score: the model text and, if any, the calibration map.

    Without a calibration (models from before calibration existed) it is the text's own sha256, so
    older registry rows still verify.
    """
    if not calibration:
        return sha256_text(model_text)
    return sha256_text(model_text + "\n#calibration " + json.dumps(calibration, sort_keys=True))


@dataclass(frozen=True)
class ModelArtifact:
    model_version: str
    use_case: str
    target: str
    model_text: str
    sha256: str
    features: list[FeatureSpec]
    params: dict
    metrics: dict[str, float]
    trained_at: datetime
    score_offset: float = 0.0
    best_iteration: int = 0
    training_set_fingerprint: str = ""
    lineage: dict = field(default_factory=dict)
    # Feature distributions of the training data (ml/drift.py), the reference for drift monitoring.
    reference_profile: dict = field(default_factory=dict)
    # Raw score -> probability (ml/calibration.py), fitted on the validation split; covered by sha256.
    calibration: dict = field(default_factory=dict)

    @classmethod
    def from_booster(cls, booster: lgb.Booster, calibration: dict | None = None, **fields) -> ModelArtifact:
        model_text = booster.model_to_string()
        calibration = calibration or {}
        return cls(
            model_text=model_text, sha256=artifact_sha256(model_text, calibration), calibration=calibration, **fields
        )

    def verify(self) -> None:
        actual = artifact_sha256(self.model_text, self.calibration)
        if actual != self.sha256:
            raise ArtifactIntegrityError(
                f"model {self.model_version}: artefact checksum mismatch "
                f"(recorded sha256 {self.sha256}, stored text and calibration hash to {actual}); "
                "refusing to use a model whose text or calibration changed after training"
            )

    def load_booster(self) -> lgb.Booster:
        """The booster, after verifying the checksum."""
        import lightgbm as lgb  # on use (see ml/training.py)

        self.verify()
        return lgb.Booster(model_str=self.model_text)

    def predict(self, frame: pd.DataFrame, chunk_size: int = 250_000) -> np.ndarray:
        """Calibrated purchase probabilities, after verifying the checksum."""
        return predict_proba(
            self.load_booster(),
            frame,
            self.features,
            self.score_offset,
            chunk_size=chunk_size,
            calibration=self.calibration,
        )

    # Row form for storage in a DuckDB table: JSON for the nested parts.
    def to_record(self) -> dict:
        record = asdict(self)
        record["features"] = json.dumps([f.model_dump() for f in self.features])
        for key in _JSON_FIELDS:
            record[key] = json.dumps(record[key], sort_keys=True, default=str)
        return record

    @classmethod
    def from_record(cls, record: dict) -> ModelArtifact:
        record = dict(record)
        record["features"] = [FeatureSpec(**f) for f in json.loads(record["features"])]
        for key in _JSON_FIELDS:
            value = record.get(key)
            record[key] = json.loads(value) if isinstance(value, str) and value else {}
        return cls(**record)
