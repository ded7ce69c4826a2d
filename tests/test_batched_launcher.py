"""hydra/launcher=batched: a multirun trained as one batch records what the basic launcher records.

Two real --multirun processes on the same sweep, each with its own sqlite MLflow store: one with
Hydra's basic launcher (one job at a time), one batched. Every job is a child run of the sweep's
parent in both, with the same name, params, tags, artifacts and per-epoch metric histories."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers import ONE_AT_A_TIME, all_runs, artifact_paths, interrupt_midway, run_cli

SWEEP = (
    "--multirun",
    "seed=0,1,2",
    "optimizer.lr=0.05,0.1",
    "trainer.max_epochs=40",
    "trainer.dtype=float64",
)
TIMED = {"epoch_time", "wall_time", "setup_time"}  # seconds: not the same in two processes
VOLATILE_TAGS = ("mlflow.", "descentlab.process", "overrides")


def children(uri: str) -> dict[str, object]:
    runs = all_runs(uri)
    (parent,) = [r for r in runs if "descentlab.sweep_dir" in r.data.tags]
    # Runs that differ only in seed are nested under a group run per configuration (src/sweep/groups.py).
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    groups = {r.info.run_id for r in runs if r.info.run_id in parents and r is not parent}
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in groups | {parent.info.run_id}]
    kids = [r for r in kids if r.info.run_id not in groups]
    assert len(kids) == len(runs) - 1 - len(groups) == 6
    assert {r.info.status for r in runs} == {"FINISHED"}
    return {r.info.run_name: r for r in kids}


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_batched_multirun_records_what_one_at_a_time_records(tmp_path: Path) -> None:
    basic_dir, batched_dir = tmp_path / "basic", tmp_path / "batched"
    for where in (basic_dir, batched_dir):
        where.mkdir()
    basic = run_cli(basic_dir, *SWEEP, *ONE_AT_A_TIME)
    batched = run_cli(batched_dir, *SWEEP, "hydra/launcher=batched")
    assert basic.returncode == 0, basic.stderr
    assert batched.returncode == 0, batched.stderr
    assert "6 jobs train as one batch" in batched.stdout + batched.stderr
    uris = [f"sqlite:///{d / 'mlflow.db'}" for d in (basic_dir, batched_dir)]
    alone, together = children(uris[0]), children(uris[1])
    assert sorted(alone) == sorted(together)  # the same run names
    clients = [MlflowClient(u) for u in uris]
    for name, one in alone.items():
        row = together[name]
        assert row.data.params == one.data.params  # type: ignore[attr-defined]
        tags = [{k: v for k, v in r.data.tags.items() if not k.startswith(VOLATILE_TAGS)} for r in (one, row)]  # type: ignore[attr-defined]
        assert tags[1] == tags[0]
        assert set(row.data.metrics) == set(one.data.metrics)  # type: ignore[attr-defined]
        for key in set(one.data.metrics) - TIMED:  # type: ignore[attr-defined]
            a = history(clients[0], one.info.run_id, key)  # type: ignore[attr-defined]
            b = history(clients[1], row.info.run_id, key)  # type: ignore[attr-defined]
            assert [s for s, _ in a] == [s for s, _ in b], key
            for (_, x), (_, y) in zip(a, b, strict=True):
                assert math.isclose(x, y, rel_tol=1e-12), (name, key, x, y)
        paths = [artifact_paths(c, r.info.run_id) for c, r in zip(clients, (one, row), strict=True)]  # type: ignore[attr-defined]
        assert paths[1] == paths[0]  # the snapshot too
    # Each job's saved config is what Hydra composed for it (the launcher patches plain values into
    # the first job's config rather than composing each job again).
    for job in range(6):
        saved = [d / "multirun" / str(job) / ".hydra" for d in (basic_dir, batched_dir)]
        for name in ("config.yaml", "overrides.yaml"):
            assert (saved[1] / name).read_text() == (saved[0] / name).read_text(), (job, name)
        hydra = [yaml.safe_load((s / "hydra.yaml").read_text())["hydra"] for s in saved]
        for h in hydra:  # each sweep has its own parent run
            del h["job"]["env_set"]["DESCENTLAB_PARENT_RUN_ID"]
        assert hydra[1]["job"] == hydra[0]["job"], job  # its id, num, override_dirname, env
        assert hydra[1]["overrides"]["task"] == hydra[0]["overrides"]["task"], job
        choices = [{k: v for k, v in h["runtime"]["choices"].items() if k != "hydra/launcher"} for h in hydra]
        assert choices[1] == choices[0]
    # The comparison table the parent prints lists the same runs.
    assert "sweep dir:" in batched.stdout and "best_val_loss" in batched.stdout


@pytest.mark.slow
def test_ctrl_c_ends_a_batch_and_every_run_killed(tmp_path: Path) -> None:
    """A SIGINT stops the batch at an epoch's end: every job's MLflow run and the parent end KILLED
    (none left RUNNING), the process exits 130."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ("trainer.max_epochs=100000", "trainer.patience=100000", "trainer.stopping_threshold=null")
    proc = interrupt_midway(tmp_path, uri, signal.SIGINT, "--multirun", "seed=0,1,2", *args,
                            "hydra/launcher=batched", f"hydra.sweep.dir={tmp_path}/multirun")  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    runs = all_runs(uri)
    assert sum("descentlab.sweep_dir" in r.data.tags for r in runs) == 1
    assert len(runs) == 4
    assert {r.info.status for r in runs} == {"KILLED"}


def comparison(stdout: str) -> list[str]:
    """The table the sweep's parent prints, from its header to its `best:` line."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run "))
    end = next(i for i, line in enumerate(lines) if line.startswith("best:"))
    return lines[start : end + 1]


@pytest.mark.slow
def test_the_readme_repeats_example_trains_as_one_batch_by_default_and_prints_what_one_at_a_time_prints(
    tmp_path: Path,
) -> None:
    example = ("--multirun", "seed=range(0,5)", "optimizer=sgd,nesterov", "trainer.max_epochs=20")
    procs = {}
    for name, launcher in (("default", ()), ("basic", ONE_AT_A_TIME)):
        (tmp_path / name).mkdir()
        procs[name] = run_cli(tmp_path / name, *example, *launcher)
        assert procs[name].returncode == 0, procs[name].stderr
    said = procs["default"].stdout  # a batch per method (jobs #0, #1 are seed 0's sgd and nesterov)
    assert "5 jobs train as one batch: #0, #2, #4, #6, #8" in said
    assert "5 jobs train as one batch: #1, #3, #5, #7, #9" in said
    assert "train as one batch" not in procs["basic"].stdout
    table = comparison(procs["default"].stdout)
    assert table == comparison(procs["basic"].stdout)  # n, means, intervals, the paired test, the best
    assert any(line.startswith("sgd lr=0.1        5  ") for line in table), table
