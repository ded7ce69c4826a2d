"""Many writers, one embedded MLflow store and one study: nothing lost, nothing duplicated."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import optuna
import pytest

from tests.helpers import all_runs, cli_env

pytestmark = pytest.mark.slow


def test_joblib_workers_and_independent_sweeps_share_one_store_and_study(tmp_path):
    common = ["-m", "src.train", "--multirun", "hydra/sweeper=descentlab_optuna",
              "hydra.sweeper.n_trials=16", "hydra.sweeper.study_name=shared",
              "optimizer.lr=interval(0.01, 0.2)", "trainer.max_epochs=5"]  # fmt: skip
    commands = [
        [*common, "hydra/launcher=joblib", "hydra.sweeper.n_jobs=4", f"hydra.sweep.dir={tmp_path}/a"],
        [*common, f"hydra.sweep.dir={tmp_path}/b"],
        [*common, f"hydra.sweep.dir={tmp_path}/c"],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, *c],
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in commands
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "database is locked" not in err

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "multirun" / "optuna.journal"))
    )
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    states = Counter(t.state.name for t in trials)
    assert len(trials) == 16 and states["RUNNING"] == 0 and states["WAITING"] == 0
    assert sorted(t.number for t in trials) == list(range(16))

    runs = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parents = [r for r in runs if "descentlab.sweep_dir" in r.data.tags]
    children = [r for r in runs if r.data.tags.get("optuna.study") == "shared" and r not in parents]
    assert len(parents) == 3 and {r.info.status for r in parents} == {"FINISHED"}
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == list(range(16))  # one run each
    assert {r.info.status for r in children} == {"FINISHED"}
