"""P8: many runs at the cost of one (`hydra/launcher=batched`, the default; issue 27), whole processes,
MLflow on; "unbatched" is Hydra's basic launcher (`hydra/launcher=basic`).

(a) N seeds of the default problem, `--multirun 'seed=range(0,N)'`: batched against one run alone
    (target: ≤ 3× its wall) and against the basic launcher, one job at a time (target: ≥ 20×
    faster), all N measured (scaling a 10-seed sweep to N, as before, counted the sweep's fixed
    costs nine times over: 158 s estimated where 100 seeds took 88.5 s). Memory: the batched
    process tree's peak against one run's (target ≤ 2×).
(b) the lesson's 4 methods × 5 seeds: batched (a batch of five seeds per method) against one job at a
    time, both measured.
(c) the 20-trial Optuna example (`+experiment=lecture_sweep`, TPE, Hyperband) with n_jobs trials
    asked at a time (`hydra.launcher.trials_together=true`): batched (the trials of a batch that
    share a batch size train as one) against Hydra's basic launcher (one trial at a time), both
    measured; and the best value each reached.
(d) MLflow's share of (a)'s batched wall: 1 − (tracking=none wall) / (MLflow wall), target < 30%.
(e) MLflow's floor: the seconds MLflow's client takes, with nothing else running, to record as many
    runs and metric values as (a)'s batched sweep stored (one `log_batch` per 1000 values, a fresh
    sqlite store), against what target (a) leaves for MLflow (3 × one run − the untracked sweep).
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

MULTIRUN = ["-m", "src.train", "--multirun", "trainer.progress=false"]


def sweep(cwd: Path, name: str, *overrides: str, batched: bool = True) -> Any:
    from benchmarks.run import run_process

    launcher = [] if batched else ["hydra/launcher=basic"]  # batched is the default
    return run_process([*MULTIRUN, *overrides, *launcher, f"hydra.sweep.dir={cwd}/{name}"], cwd)


def stored(db: Path) -> tuple[int, int]:
    """How many runs and metric values a sqlite store holds."""
    with contextlib.closing(sqlite3.connect(db)) as store:
        count = [store.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("runs", "metrics")]
    return count[0], count[1]


def mlflow_floor(runs: int, values: int) -> float:
    """Seconds MLflow's client takes to create `runs` runs, log `values` metric values among them (ten
    per step, one `log_batch` per 1000) and end them, in a fresh sqlite store, this process alone."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from src.tracking.store import quiet_migrations

    quiet_migrations()
    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/floor.db")
        experiment = client.create_experiment("floor")  # the store's creation is not counted
        now, each = int(time.time() * 1000), values // runs
        metrics = [Metric(f"metric_{i % 10}", 1.0 / (i + 1), now, i // 10) for i in range(each)]
        start = time.perf_counter()
        for _ in range(runs):
            run_id = client.create_run(experiment).info.run_id
            for i in range(0, each, 1000):
                client.log_batch(run_id, metrics=metrics[i : i + 1000])
            client.set_terminated(run_id)
        return time.perf_counter() - start


def p8_seeds(seeds: int, epochs: int) -> dict[str, Any]:
    from benchmarks.run import run_process

    epochs_ = f"trainer.max_epochs={epochs}"
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        one = ["-m", "src.train", "trainer.progress=false", epochs_, f"hydra.run.dir={tmp}/one"]
        alone = run_process(one, cwd)
        before = stored(cwd / "mlflow.db")
        batched = sweep(cwd, "batched", f"seed=range(0,{seeds})", epochs_)
        runs, values = (after - had for after, had in zip(stored(cwd / "mlflow.db"), before, strict=True))
        untracked = sweep(cwd, "none", f"seed=range(0,{seeds})", epochs_, "tracking=none")
        unbatched = sweep(cwd, "unbatched", f"seed=range(0,{seeds})", epochs_, batched=False)
    vs_one, speedup = batched.wall / alone.wall, unbatched.wall / batched.wall
    memory = batched.peak_mb / alone.peak_mb
    share = 1 - untracked.wall / batched.wall
    floor, budget = mlflow_floor(runs, values), 3 * alone.wall - untracked.wall
    return {
        "seeds": seeds,
        "wall": {
            "one_run": alone.wall,
            "batched": batched.wall,
            "batched_no_tracking": untracked.wall,
            "unbatched": unbatched.wall,
        },
        "peak_mb": {"one_run": alone.peak_mb, "batched": batched.peak_mb},
        "vs_one_run": vs_one,
        "speedup": speedup,
        "memory_ratio": memory,
        "mlflow_share": share,
        "mlflow_floor": {"runs": runs, "values": values, "seconds": floor, "budget": budget},
        "met": {
            "vs_one_run": vs_one <= 3,
            "speedup": speedup >= 20,
            "memory": memory <= 2,
            "mlflow": share < 0.3,
        },
    }


def p8_methods(seeds: int, epochs: int) -> dict[str, Any]:
    grid = ["optimizer=sgd,momentum,nesterov,adam", f"seed=range(0,{seeds})", f"trainer.max_epochs={epochs}"]
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        batched = sweep(cwd, "batched", *grid)
        unbatched = sweep(cwd, "unbatched", *grid, batched=False)
    speedup = unbatched.wall / batched.wall
    wall = {"batched": batched.wall, "unbatched": unbatched.wall}
    return {"jobs": 4 * seeds, "wall": wall, "speedup": speedup}


def p8_trials(trials: int, n_jobs: int, epochs: int) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    common = ["+experiment=lecture_sweep", f"trainer.max_epochs={epochs}", "hydra.sweeper.sampler.seed=0",
              f"hydra.sweeper.pruner.max_resource={epochs}", f"hydra.sweeper.n_trials={trials}",
              f"hydra.sweeper.n_jobs={n_jobs}"]  # fmt: skip
    wall, best = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("batched", "unbatched"):
            cwd = Path(tmp) / name  # each its own study (the journal under the launch dir) and store
            cwd.mkdir()
            together = ["hydra.launcher.trials_together=true"] if name == "batched" else []
            wall[name] = sweep(cwd, "sweep", *common, *together, batched=name == "batched").wall
            journal = optuna.storages.journal.JournalFileBackend(str(cwd / "multirun" / "optuna.journal"))
            storage = optuna.storages.JournalStorage(journal)
            best[name] = optuna.load_study(study_name="lecture_sweep", storage=storage).best_value
    return {"trials": trials, "n_jobs": n_jobs, "wall": wall, "best_value": best,
            "speedup": wall["unbatched"] / wall["batched"]}  # fmt: skip


def rows(f: dict[str, Any]) -> list[tuple[str, float, str, float, float, str, bool | None]]:
    """P8's rows of the benchmark table (benchmarks/run.py: figure, ours, vs, other, ratio, target, met)."""
    a, b, c = f["seeds"], f["methods"], f["trials"]
    wall, met, n, floor = a["wall"], a["met"], a["seeds"], a["mlflow_floor"]
    return [
        (f"P8a {n} seeds batched s", wall["batched"], "one run", wall["one_run"], a["vs_one_run"],
         "<= 3x", met["vs_one_run"]),
        (f"P8a {n} seeds unbatched s", wall["unbatched"], "batched", wall["batched"], a["speedup"],
         ">= 20x", met["speedup"]),
        ("P8a memory MB", a["peak_mb"]["batched"], "one run", a["peak_mb"]["one_run"], a["memory_ratio"],
         "<= 2x", met["memory"]),
        (f"P8b {b['jobs']} jobs unbatched s", b["wall"]["unbatched"], "batched", b["wall"]["batched"],
         b["speedup"], "", None),
        (f"P8c {c['trials']} trials unbatched s", c["wall"]["unbatched"], "batched", c["wall"]["batched"],
         c["speedup"], "", None),
        (f"P8c best value (n_jobs={c['n_jobs']})", c["best_value"]["batched"], "unbatched",
         c["best_value"]["unbatched"], c["best_value"]["batched"] / c["best_value"]["unbatched"], "", None),
        ("P8d MLflow share of P8a", wall["batched"] - wall["batched_no_tracking"], "batched s",
         wall["batched"], a["mlflow_share"], "< 0.3x", met["mlflow"]),
        (f"P8e MLflow floor s ({floor['values']} values)", floor["seconds"], "budget s", floor["budget"],
         floor["seconds"] / floor["budget"] if floor["budget"] > 0 else math.inf, "", None),
    ]  # fmt: skip
