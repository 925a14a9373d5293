"""Jobs: one per use case, running its whole graph from the raw export to the published scores."""

from __future__ import annotations

import dagster as dg

from mlops_assets.use_cases import UseCase


def pipeline_job_name(use_case: UseCase) -> str:
    return f"{use_case.name}_pipeline"


def build_pipeline_job(use_case: UseCase) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=pipeline_job_name(use_case),
        selection=dg.AssetSelection.key_prefixes([use_case.name]),
        description=(
            f"{use_case.title}: load the export, build features (dbt), train, check, score and publish."
        ),
    )
