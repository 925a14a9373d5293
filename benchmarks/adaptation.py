"""Does the loop adapt to a real regime change, and stay quiet on stationary and seasonal data?

    .venv/bin/python benchmarks/adaptation.py [--seeds 10] [--batches 8] [--change-batch 3]
                                              [--size 1000] [--initial 5000] [--quiet-seeds N]

The synthetic Swiss bank (use case swiss_bank, retrain cool-down 0) runs through the real platform,
in process: a first champion is trained on `--initial` customers of a year of the old economy; then
per batch the replay tool writes the batch and its outcomes into the incoming folder, the incoming-
files sensor's run request is executed (load, checks, drift, score, publish), the retraining
sensor is ticked and any retrain it requests is executed. Batches are calendar months; the regime
change starts at `--change-batch`.

Printed per batch (mean over seeds): realized ROC AUC and top-decile lift on the batch's outcomes of
the stale first champion and of the champion in use (the one that scored the batch), and retrains
requested; then the detection delay (batches from the change to the first retrain request, 0 = the
changed batch itself) and false retrains on stationary and seasonal-only replays (`--quiet-seeds`
seeds each, default: as many as `--seeds`).

`--mode functions` replays the same batches through the loop's decision functions only, without
Dagster, dbt or the warehouse (minutes for 10 seeds on a busy machine): the champion is trained
with the pipeline's split and training functions on all labelled history, each batch is compared
with its reference profile (`compare_to_reference`, `score_drift`, `classify_batch` with the use
case's seasonal features), a retrain is requested when the causes call for one or the realized
ROC AUC / lift is under the `monitoring:` floors (what the checks and the sensor decide), and the
challenger replaces the champion unless its test ROC AUC is more than `promotion.tolerance` below
the champion's on the same test customers. The default `--mode platform` runs the real platform.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLOPS_HOME", tempfile.mkdtemp(prefix="mlops-adaptation-"))

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402

from mlops_assets.definitions import build_definitions  # noqa: E402
from mlops_assets.ml.evaluation import classification_metrics  # noqa: E402
from mlops_assets.registry import current_champion, load_artifact  # noqa: E402
from mlops_assets.replay import write_replay_files  # noqa: E402
from mlops_assets.settings import Settings  # noqa: E402
from mlops_assets.synthetic.swiss_bank import write_parquet  # noqa: E402
from mlops_assets.use_cases import get_use_case  # noqa: E402

NAME = "swiss_bank"


class Platform:
    def __init__(self, home: Path, seed: int, initial: int):
        os.environ["MLOPS_HOME"] = str(home)
        use_case = get_use_case(NAME)
        self.use_case = use_case.model_copy(
            update={"monitoring": use_case.monitoring.model_copy(update={"retrain_cooldown_minutes": 0})}
        )
        write_parquet(self.use_case.source_path, initial, seed=seed)
        self.settings = Settings.under(home)
        self.instance = dg.DagsterInstance.ephemeral()
        self.defs = build_definitions(self.settings, use_cases=(self.use_case,))
        assert self.run(f"{NAME}_pipeline", {}, {}).success, "the first pipeline run failed"
        self.stale = self.champion()
        self.cursors = {"incoming": None, "retrain": None}
        self.tick("retrain")

    def run(self, job: str, run_config: dict, tags: dict):
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, run_config=run_config, raise_on_error=False, tags=tags
        )

    def tick(self, which: str) -> list:
        name = f"{NAME}_incoming_files" if which == "incoming" else f"{NAME}_retrain_on_failed_checks"
        context = dg.build_sensor_context(instance=self.instance, definitions=self.defs, cursor=self.cursors[which])
        result = self.defs.resolve_sensor_def(name).evaluate_tick(context)
        self.cursors[which] = result.cursor
        return result.run_requests or []

    def connect(self):
        return duckdb.connect(str(self.settings.duckdb_path), read_only=True)

    def champion(self) -> str:
        with self.connect() as connection:
            return current_champion(connection, NAME)

    def batch(self, scenario: str, number: int, seed: int, size: int, change_batch: int) -> dict:
        write_replay_files(
            self.use_case.source_path,
            self.settings.incoming_dir / NAME,
            scenario,
            batch_number=number,
            size=size,
            seed=seed,
            strength=1.0,
            change_batch=change_batch,
            generator=NAME,
        )
        [request] = self.tick("incoming")
        result = self.run(request.job_name, request.run_config, dict(request.tags))
        assert result.success, f"batch {number} failed"
        in_use = self.champion()
        measured = {"in_use": self.realized(in_use), "stale": self.realized(self.stale)}
        retrains = self.tick("retrain")
        for request in retrains:
            self.run(f"{NAME}_retrain", request.run_config or {}, dict(request.tags))
        return {**measured, "retrains": len(retrains)}

    def realized(self, version: str) -> tuple[float, float]:
        with self.connect() as connection:
            artifact = load_artifact(connection, NAME, version)
            batch = connection.execute(
                f"""select * from {NAME}.customer_features
                    where load_id = (select load_id from {NAME}.customer_features order by loaded_at desc limit 1)"""
            ).fetchdf()
        metrics = classification_metrics(batch["bought_product_a"].to_numpy(), artifact.predict(batch))
        return metrics["roc_auc"], metrics["top_decile_lift"]


def replay(scenario: str, seed: int, args) -> list[dict]:
    """One replay; each batch's figures are printed as soon as measured (long runs on busy machines)."""
    if args.mode == "functions":
        platform = FunctionLoop(seed, args.initial)
    else:
        platform = Platform(Path(tempfile.mkdtemp(prefix=f"adapt-{scenario}-{seed}-")), seed, args.initial)
    rows = []
    for number in range(1, args.batches + 1):
        row = platform.batch(scenario, number, seed, args.size, args.change_batch)
        rows.append(row)
        print(
            f"  [{scenario} seed {seed} batch {number}] stale ROC AUC {row['stale'][0]:.3f} lift {row['stale'][1]:.2f}"
            f" | in use ROC AUC {row['in_use'][0]:.3f} lift {row['in_use'][1]:.2f} | retrains {row['retrains']}",
            flush=True,
        )
    return rows


def typed(frame):
    """The batch as the dbt staging and mart models type it."""
    frame = frame.copy()
    for column in ("has_mortgage", "has_investment_account", "salary_account"):
        frame[column] = frame[column].astype(int)
    for column in ("settlement", "canton"):
        frame[column] = frame[column].astype(str)
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame["balance_per_product"] = frame["balance_chf"] / frame["products_held"]
    return frame


class FunctionLoop:
    """The loop's decisions on plain functions (see `--mode functions`)."""

    def __init__(self, seed: int, initial: int):
        import pandas as pd

        from mlops_assets.synthetic.swiss_bank import iter_customers

        self.use_case = get_use_case(NAME)
        base = typed(pd.concat(iter_customers(initial, seed=seed), ignore_index=True))
        base[self.use_case.target] = base[self.use_case.target].astype(int)
        self.history = base
        self.champion, self.profile, self.score_profile, _ = self.train()
        self.stale = self.champion

    def train(self):
        from mlops_assets.ml.datasets import assign_splits
        from mlops_assets.ml.drift import build_reference_profile, build_score_profile
        from mlops_assets.ml.training import predict_proba, train_propensity_model

        use_case, frame = self.use_case, self.history.sort_values("customer_id", ignore_index=True)
        target = use_case.target
        frame["split"] = assign_splits(
            frame["customer_id"], frame[target], use_case.split.fractions, use_case.split.seed
        )
        parts = {name: part for name, part in frame.groupby("split")}
        model = train_propensity_model(
            parts["train"], parts["validation"], use_case.features, target, use_case.training
        )
        test_scores = predict_proba(model.booster, parts["test"], use_case.features, model.score_offset)
        return model, build_reference_profile(frame, use_case.features), build_score_profile(test_scores), parts["test"]

    def predict(self, model, frame):
        from mlops_assets.ml.training import predict_proba

        return predict_proba(model.booster, frame, self.use_case.features, model.score_offset)

    def batch(self, scenario: str, number: int, seed: int, size: int, change_batch: int) -> dict:
        from mlops_assets.ml.drift import classify_batch, compare_to_reference, score_drift
        from mlops_assets.replay import make_swiss_bank_batch

        use_case, monitoring = self.use_case, self.use_case.monitoring
        replayed = make_swiss_bank_batch(
            scenario, batch_number=number, size=size, seed=seed, strength=1.0, change_batch=change_batch
        )
        batch = typed(replayed.customers)
        labels = (replayed.outcomes[use_case.target] == "true").astype(int).to_numpy()
        in_use_scores = self.predict(self.champion, batch)
        in_use = classification_metrics(labels, in_use_scores)
        stale = classification_metrics(labels, self.predict(self.stale, batch))
        report = compare_to_reference(self.profile, batch, monitoring.drift)
        scores = score_drift(self.score_profile, in_use_scores, monitoring.drift)
        causes = classify_batch(
            report,
            score_drifted=scores["drifted"],
            seasonal=set(monitoring.seasonal_features),
            co_moving_min=monitoring.co_moving_min_features,
        )
        poor = (
            in_use["roc_auc"] < monitoring.min_realized_roc_auc
            or in_use["top_decile_lift"] < monitoring.min_realized_top_decile_lift
        )
        retrain = causes["requests_retrain"] or poor
        self.history = pd_concat(self.history, batch.assign(**{use_case.target: labels}))
        if retrain:
            challenger, profile, score_profile, test = self.train()
            test_labels = test[use_case.target].to_numpy()
            challenger_auc = classification_metrics(test_labels, self.predict(challenger, test))["roc_auc"]
            champion_auc = classification_metrics(test_labels, self.predict(self.champion, test))["roc_auc"]
            if challenger_auc >= champion_auc - use_case.promotion.tolerance:
                self.champion, self.profile, self.score_profile = challenger, profile, score_profile
        return {
            "in_use": (in_use["roc_auc"], in_use["top_decile_lift"]),
            "stale": (stale["roc_auc"], stale["top_decile_lift"]),
            "retrains": int(retrain),
        }


def pd_concat(first, second):
    import pandas as pd

    return pd.concat([first, second], ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--quiet-seeds", type=int, help="seeds of the stationary and seasonal replays")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--change-batch", type=int, default=3)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--initial", type=int, default=4000)
    parser.add_argument("--mode", choices=["platform", "functions"], default="platform")
    parser.add_argument("--skip-quiet", action="store_true", help="only the regime change")
    parser.add_argument("--only-quiet", action="store_true", help="only the stationary and seasonal replays")
    args = parser.parse_args()
    logging.getLogger("dagster").setLevel(logging.ERROR)
    started = time.perf_counter()
    if not args.only_quiet:
        report_regime_change([replay("regime_change", seed, args) for seed in range(args.seeds)], args)
    quiet = args.quiet_seeds if args.quiet_seeds is not None else args.seeds
    for scenario in () if args.skip_quiet else ("stationary", "seasonal"):
        false = [sum(r["retrains"] for r in replay(scenario, seed, args)) for seed in range(quiet)]
        print(
            f"{scenario} ({args.mode}): false retrains per replay of {args.batches} batches over {quiet} seeds: {false}"
        )
    print(f"elapsed {time.perf_counter() - started:.0f} s")


def report_regime_change(runs: list[list[dict]], args) -> None:
    print(
        f"[{args.mode}] regime change at batch {args.change_batch}; {args.seeds} seeds, batches of {args.size}, "
        f"first champion on {args.initial} customers"
    )
    print("batch | stale ROC AUC | in-use ROC AUC | stale lift | in-use lift | retrains requested (sum)")
    for index in range(args.batches):
        rows = [run[index] for run in runs]
        print(
            f"{index + 1:5d} | {statistics.mean(r['stale'][0] for r in rows):13.3f} | "
            f"{statistics.mean(r['in_use'][0] for r in rows):14.3f} | "
            f"{statistics.mean(r['stale'][1] for r in rows):10.2f} | "
            f"{statistics.mean(r['in_use'][1] for r in rows):11.2f} | {sum(r['retrains'] for r in rows)}"
        )
    delays = []
    for run in runs:
        detected = [n for n, r in enumerate(run, start=1) if n >= args.change_batch and r["retrains"]]
        delays.append(detected[0] - args.change_batch if detected else None)
    found = [d for d in delays if d is not None]
    print(
        f"detection delay (batches after the change): {delays}; "
        f"within 2 batches: {sum(d <= 2 for d in found)}/{len(delays)}"
    )
    after = [r for run in runs for r in run[args.change_batch :]]  # from the 2nd batch after the change
    gain = statistics.mean(r["in_use"][0] - r["stale"][0] for r in after)
    print(f"from the 2nd changed batch on: in-use minus stale ROC AUC = {gain:+.3f} (target >= +0.05)")
    before = [r for run in runs for r in run[: args.change_batch - 1]]
    print(f"retrains requested before the change (false): {sum(r['retrains'] for r in before)}")


if __name__ == "__main__":
    main()
