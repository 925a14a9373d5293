"""A new export or outcome file in `<incoming>/<use case>/` starts a run that loads it.

`customers_<batch>.csv|parquet` starts the batch job (with `outcomes_<batch>.csv` of the same batch if
it is already there); an outcome file on its own starts the outcomes job. The cursor remembers
file names with their modification times (a file rewritten later counts again); a file whose content
was already ingested by any path (CLI, UI, an earlier tick) is skipped by ingestion itself, which
checks the use case's ledger of file hashes (`<use case>.ingested_files`). Gzip-compressed CSV
(`.csv.gz`) is accepted.
"""

import json
from pathlib import Path

import dagster as dg

from mlops_assets.defs.jobs import AssetJob, trigger_tags
from mlops_assets.defs.readiness import ChampionGate
from mlops_assets.ingestion import export_ingestion_config

EXPORT_SUFFIXES = (".csv", ".csv.gz", ".parquet")


def _files(folder: Path, prefix: str) -> list[Path]:
    return sorted(
        p for p in folder.glob(f"{prefix}_*") if p.name.endswith(EXPORT_SUFFIXES) and not p.name.startswith(".")
    )


def batch_of(path: Path, prefix: str) -> str:
    """`customers_7.csv.gz` -> `7`: the batch that pairs an export with its outcome file."""
    name = path.name.removeprefix(f"{prefix}_")
    for suffix in EXPORT_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def build_incoming_files_sensor(
    use_case_name: str, incoming_dir: Path, batch_job: AssetJob, outcomes_job: AssetJob, gate: ChampionGate
) -> dg.SensorDefinition:
    folder = Path(incoming_dir) / use_case_name

    @dg.sensor(
        name=f"{use_case_name}_incoming_files",
        jobs=[batch_job, outcomes_job],
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts {batch_job.name} for each new customer export and {outcomes_job.name} for each "
        f"lone outcome file in {folder}. Skips until {use_case_name} has a champion.",
    )
    def incoming_files(context: dg.SensorEvaluationContext):
        handled: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        if reason := gate.skip_reason(context.instance):
            return dg.SkipReason(reason)
        if not folder.exists():
            return dg.SkipReason(f"{folder} does not exist yet")

        def is_new(path: Path) -> bool:
            return handled.get(path.name) != path.stat().st_mtime_ns

        requests = []
        outcome_files = {batch_of(p, "outcomes"): p for p in _files(folder, "outcomes")}
        for export in _files(folder, "customers"):
            if not is_new(export):
                continue
            batch = batch_of(export, "customers")
            outcomes = outcome_files.get(batch)
            raw_config = export_ingestion_config(export)
            requests.append(
                dg.RunRequest(
                    run_key=f"{export.name}:{export.stat().st_mtime_ns}",
                    job_name=batch_job.name,
                    run_config={
                        "ops": {
                            f"{use_case_name}__raw_customers": {"config": raw_config},
                            f"{use_case_name}__raw_outcomes": {
                                "config": {"outcomes_path": str(outcomes) if outcomes else ""}
                            },
                        }
                    },
                    tags=trigger_tags("sensor", {"sensor": "incoming files", "file": export.name}),
                )
            )
            handled[export.name] = export.stat().st_mtime_ns
            if outcomes is not None:
                handled[outcomes.name] = outcomes.stat().st_mtime_ns
        for outcomes in outcome_files.values():
            if not is_new(outcomes):
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"{outcomes.name}:{outcomes.stat().st_mtime_ns}",
                    job_name=outcomes_job.name,
                    run_config={
                        "ops": {f"{use_case_name}__raw_outcomes": {"config": {"outcomes_path": str(outcomes)}}}
                    },
                    tags=trigger_tags("sensor", {"sensor": "incoming files", "file": outcomes.name}),
                )
            )
            handled[outcomes.name] = outcomes.stat().st_mtime_ns
        if not requests:
            return dg.SkipReason(f"no new files in {folder}")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(handled, sort_keys=True))

    return incoming_files
