"""Under `dagster dev`: runs whose process died are marked failed and their pool slots freed.

Dagster's run monitoring cannot tell whether a run worker of the default run launcher is alive, so a
run killed by the kernel (out of memory) or by hand stays STARTED and holds the `duckdb_warehouse`
pool slot: every later run waits. This sensor applies the same check as the `mlops` command before
each run (mlops_assets/run_guard.py) every minute; it never requests runs.
"""

import dagster as dg

from mlops_assets.run_guard import recover_abandoned_runs


def build_run_recovery_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name="mlops_recover_abandoned_runs",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Marks runs whose process is gone as failed and frees their pool slots (no manual step).",
    )
    def recover_abandoned(context: dg.SensorEvaluationContext):
        recovered = recover_abandoned_runs(context.instance)
        for line in recovered:
            context.log.warning(line)
        return dg.SkipReason("; ".join(recovered) if recovered else "no abandoned runs")

    return recover_abandoned
