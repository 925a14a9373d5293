"""Use-case definitions: one YAML file per propensity model drives its whole asset graph.

A use case names its source export, customer id, target, features, sensitive attributes and
thresholds. Adding a YAML file here (plus its dbt models under `dbt_project/models/<name>/`) adds a
new set of assets under the key prefix `<name>/`; no pipeline code is copied.
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops_assets.ml.datasets import TimeSpec
from mlops_assets.ml.drift import DriftThresholds
from mlops_assets.ml.fairness import FairnessBounds
from mlops_assets.ml.promotion import PromotionPolicy
from mlops_assets.ml.training import FeatureSpec, TrainingParams
from mlops_assets.ml.windows import TrainingWindow
from mlops_assets.quality.rows import ColumnRule, rules_from_dictionary
from mlops_assets.settings import resolve_project_path

USE_CASE_DIR = Path(__file__).parent


class SourceSpec(BaseModel):
    """Where the customer export comes from and how to read it."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="CSV or Parquet file; relative paths are relative to the project root.")
    format: Literal["csv", "parquet"] = "csv"
    # The CSV dialect of every file of the use case: initial export, batches, incoming files, outcomes.
    delimiter: str = Field(",", min_length=1, max_length=1)
    decimal: Literal[".", ","] = Field(".", description="Decimal mark of numbers in CSV files.")
    encoding: Literal["utf-8", "utf-16", "latin-1"] = "utf-8"
    quote: str = Field('"', min_length=1, max_length=1)
    id_column: str | None = Field(
        None,
        description=(
            "Column holding the customer id (also in outcome files). None: ids are assigned by ingestion "
            "(row position in the full export; batches continue the numbering)."
        ),
    )
    id_prefix: str = "C"

    @model_validator(mode="after")
    def _decimal_differs_from_delimiter(self) -> SourceSpec:
        if self.decimal == self.delimiter:
            raise ValueError(f"the decimal mark and the delimiter cannot both be {self.delimiter!r}")
        return self


class TargetEncoding(BaseModel):
    """Which values of a two-valued target column mean bought (1) and did not buy (0)."""

    model_config = ConfigDict(extra="forbid")

    positive: list[str] = Field(min_length=1, description="Values meaning the customer bought, e.g. [yes].")
    negative: list[str] = Field(min_length=1, description="Values meaning the customer did not buy, e.g. [no].")

    @field_validator("positive", "negative", mode="before")
    @classmethod
    def _strings(cls, values):
        # YAML reads an unquoted yes/no/true/false as a boolean: ask for the value as written.
        if any(isinstance(v, bool) for v in values or []):
            raise ValueError("quote the values as written in the file, e.g. positive: ['yes'], negative: ['no']")
        return [str(v) for v in values]

    @model_validator(mode="after")
    def _disjoint(self) -> TargetEncoding:
        both = sorted(set(self.positive) & set(self.negative))
        if both:
            raise ValueError(f"target_encoding: {both} cannot be both positive and negative")
        return self


class SplitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: float = 0.6
    validation: float = 0.2
    test: float = 0.2
    seed: int = 42

    @property
    def fractions(self) -> tuple[float, float, float]:
        return (self.train, self.validation, self.test)


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_test_roc_auc: float = Field(0.70, description="Absolute quality floor on the test split.")


class QualitySpec(BaseModel):
    """Data-quality limits; see README "Data quality"."""

    model_config = ConfigDict(extra="forbid")

    max_quarantine_share: float = Field(
        0.05, ge=0, le=1, description="Reject a load when more than this share of its rows is unusable."
    )
    min_row_ratio: float = Field(
        0.5, gt=0, description="Fail when a load has fewer rows than this times the previous load's."
    )
    max_row_ratio: float = Field(
        10.0, gt=0, description="Fail when a load has more rows than this times the previous load's."
    )
    max_null_share: float = Field(0.0, ge=0, le=1, description="Largest share of nulls in a feature column.")
    unit_change_tolerance: float = Field(
        0.1,
        gt=0,
        lt=0.5,
        description=(
            "A column is a unit change when its quartiles are all the reference's times 10^k (k != 0) "
            "within this many log10 units. Distribution shifts within valid values are drift, never blocked."
        ),
    )


class ScoringSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk_size: int = Field(250_000, ge=1_000, description="Customers scored per LightGBM call.")
    explain_top_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of customers (highest scores first) whose top reasons are computed (SHAP).",
    )
    reasons_per_customer: int = Field(3, ge=1, le=10)


class MonitoringSpec(BaseModel):
    """Drift and performance monitoring, and when they retrain (README "Monitoring and retraining")."""

    model_config = ConfigDict(extra="forbid")

    drift: DriftThresholds = DriftThresholds()
    max_drifted_features: int = Field(
        0, ge=0, description="feature_drift fails when more features than this have a drift alert."
    )
    min_realized_roc_auc: float = Field(0.60, description="realized_performance fails below this ROC AUC.")
    min_realized_top_decile_lift: float = Field(1.5, description="... or below this top-decile lift.")
    min_outcomes: int = Field(200, ge=1, description="Outcomes a batch needs before its performance is judged.")
    retrain_cooldown_minutes: float = Field(
        30, ge=0, description="After a retrain request, further failures wait this long (then one request)."
    )
    published_scores_max_age_hours: float = Field(26, gt=0, description="Freshness of the published scores.")
    seasonal_features: list[str] = Field(
        default_factory=list,
        description="Features whose drift is expected (calendar, campaign): reported, never a retrain by itself.",
    )
    co_moving_min_features: int = Field(
        3, ge=2, description="This many features moving for the whole population at once are a co-moving group."
    )
    drift_policy: Literal["admit", "review", "block"] = Field(
        "admit",
        description=(
            "A batch whose drift calls for retraining: admit (load, alert, retrain), review (hold it out of "
            "the history until a data engineer accepts or rejects it) or block (reject it)."
        ),
    )
    training_window: TrainingWindow = TrainingWindow()


class FairnessSpec(FairnessBounds):
    """Fairness gate of the champion/challenger decision (ml/fairness.py)."""

    attribute: str = Field(description="The sensitive attribute (a mart column) whose groups are compared.")


class UseCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    title: str
    description: str
    source: SourceSpec
    data_dictionary: str = Field(description="CSV with source_column, feature_name, description, ...")
    code_labels: str | None = Field(None, description="CSV with code_list, code, label for coded values")
    quality_suites: str | None = Field(
        None,
        description="Folder of the use case's expectation suite files (default mlops_assets/quality/suites/"
        "<name>); optional: without files the suites are built from the data dictionary.",
    )
    feature_mart: str = Field(description="dbt model (alias) holding one row of features per customer")
    target: str
    target_encoding: TargetEncoding | None = Field(
        None,
        description=(
            "Values of the export's target column meaning 1 and 0 (e.g. yes/no); None: the data "
            "dictionary's allowed values, positive first."
        ),
    )
    features: list[FeatureSpec]
    sensitive_attributes: list[str] = []
    split: SplitSpec = SplitSpec()
    time: TimeSpec = TimeSpec()
    training: TrainingParams = TrainingParams()
    thresholds: Thresholds = Thresholds()
    quality: QualitySpec = QualitySpec()
    scoring: ScoringSpec = ScoringSpec()
    promotion: PromotionPolicy = PromotionPolicy()
    monitoring: MonitoringSpec = MonitoringSpec()
    fairness: FairnessSpec | None = None
    feature_descriptions: dict[str, str] = Field(
        default_factory=dict, description="Readable names of features built in dbt (not in the dictionary)."
    )
    known_limitations: list[str] = []
    replay: Literal["caravan", "swiss_bank"] | None = Field(
        None, description="Replay generator for monitoring drills (mlops_assets/replay.py), if any."
    )

    @field_validator("name")
    @classmethod
    def _name_is_an_identifier(cls, name: str) -> str:
        # The name is a DuckDB schema, a dbt schema and an asset key prefix.
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"use-case name {name!r} must be lower-case letters, digits and _")
        return name

    @model_validator(mode="after")
    def _features_are_consistent(self) -> UseCase:
        names = [f.name for f in self.features]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"features listed twice: {duplicated}")
        if self.target in names:
            raise ValueError(f"the target {self.target!r} cannot also be a feature")
        if self.time.order == "column" and self.time.column in names:
            raise ValueError(f"the time column {self.time.column!r} cannot also be a feature")
        unknown_seasonal = sorted(set(self.monitoring.seasonal_features) - set(names))
        if unknown_seasonal:
            raise ValueError(f"monitoring.seasonal_features are not features: {unknown_seasonal}")
        if self.fairness and self.fairness.attribute not in self.sensitive_attributes:
            raise ValueError(f"fairness attribute {self.fairness.attribute!r} is not in sensitive_attributes")
        return self

    @property
    def source_path(self) -> Path:
        return resolve_project_path(self.source.path)

    @property
    def data_dictionary_path(self) -> Path:
        return resolve_project_path(self.data_dictionary)

    @property
    def suite_dir(self) -> Path:
        if self.quality_suites:
            return resolve_project_path(self.quality_suites)
        return USE_CASE_DIR.parent / "quality" / "suites" / self.name

    def load_data_dictionary(self) -> pd.DataFrame:
        return pd.read_csv(self.data_dictionary_path)

    def load_code_labels(self) -> pd.DataFrame | None:
        return pd.read_csv(resolve_project_path(self.code_labels)) if self.code_labels else None

    def fairness_group_labels(self) -> dict[str, str]:
        """Labels of the fairness attribute's groups (empty without a fairness section or code list)."""
        return self.value_labels(self.fairness.attribute) if self.fairness else {}

    def value_labels(self, column: str) -> dict[str, str]:
        """Readable labels of a coded column's values, from its code list (e.g. caravan's avg_age_class:
        "3" -> "40-50 years"); empty when the column is not coded."""
        labels = self.load_code_labels()
        dictionary = self.load_data_dictionary()
        code_list = dictionary.loc[dictionary["feature_name"] == column, "code_list"].dropna()
        if labels is None or code_list.empty:
            return {}
        listed = labels[labels["code_list"] == code_list.iloc[0]]
        return {str(code): str(label) for code, label in zip(listed["code"], listed["label"], strict=True)}

    def target_source(self) -> tuple[str, tuple[str, ...]]:
        """The export's target column and its allowed values, positive outcome first (e.g. Yes, No)."""
        row = self.load_data_dictionary().query("value_type == 'target'").iloc[0]
        if self.target_encoding is not None:
            return row["source_column"], (*self.target_encoding.positive, *self.target_encoding.negative)
        return row["source_column"], tuple(str(row["allowed_values"]).split("|"))

    def positive_target_values(self) -> tuple[str, ...]:
        """The target column's values meaning the customer bought."""
        if self.target_encoding is not None:
            return tuple(self.target_encoding.positive)
        return self.target_source()[1][:1]

    def row_rules(self) -> list[ColumnRule]:
        """Per source column: data type, required, range, allowed values (quality/rows.py)."""
        rules = rules_from_dictionary(self.load_data_dictionary())
        if self.target_encoding is None:
            return rules
        target_column, values = self.target_source()
        return [replace(r, allowed_values=values) if r.column == target_column else r for r in rules]

    def readable_names(self) -> dict[str, str]:
        """Feature name -> short description (code-list references dropped), for reasons and cards."""
        dictionary = self.load_data_dictionary()
        short = dictionary["description"].str.replace(r"\s*\((?:see )?code list[^)]*\)", "", regex=True)
        return {**dict(zip(dictionary["feature_name"], short, strict=True)), **self.feature_descriptions}


def load_use_case(path: Path) -> UseCase:
    with open(path) as handle:
        try:
            return UseCase.model_validate(yaml.safe_load(handle))
        except ValueError as error:
            raise ValueError(f"invalid use-case definition {path}: {error}") from error


@cache
def all_use_cases() -> tuple[UseCase, ...]:
    return tuple(load_use_case(path) for path in sorted(USE_CASE_DIR.glob("*.yaml")))


def get_use_case(name: str) -> UseCase:
    for use_case in all_use_cases():
        if use_case.name == name:
            return use_case
    known = ", ".join(u.name for u in all_use_cases())
    raise KeyError(f"unknown use case {name!r}; known: {known}")
