"""Same command, fresh processes: bitwise-identical metric histories."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import all_runs, run_cli

METRICS = ("train_loss", "val_loss", "grad_norm", "param_error", "lr")


def histories(uri: str) -> list[dict[str, list[tuple[int, float]]]]:
    client = MlflowClient(uri)
    out = []
    for run in sorted(all_runs(uri), key=lambda r: r.info.start_time):
        out.append(
            {
                key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                for key in METRICS
            }
        )
    return out


@pytest.mark.slow
def test_two_fresh_processes_give_identical_histories(tmp_path):
    args = ("optimizer=adam", "trainer.max_epochs=25", "trainer.sampling=replacement", "seed=7")
    for _ in range(2):
        proc = run_cli(tmp_path, *args)
        assert proc.returncode == 0, proc.stderr
    first, second = histories(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert first == second
    assert len(first["val_loss"]) == 25
