"""The benchmark suite in smoke mode (CI proves it runs; figures are printed, never asserted)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks.lecture import lecture_adam, lecture_sgd, make_problem
from benchmarks.run import floor_adam, floor_sgd, main, run_process, spread


@pytest.mark.slow
def test_the_baselines_are_real_sgd_and_adam_that_recover_theta():
    theta, X, Y = make_problem()
    for lecture, floor, epochs in ((lecture_sgd, floor_sgd, 20), (lecture_adam, floor_adam, 300)):
        model, steps = lecture(X[:700], Y[:700], epochs=epochs)
        assert steps == epochs * 22  # ⌈700 / 32⌉ batches per epoch
        assert float(torch.norm(theta - model.weight.detach().squeeze())) < 1e-3
        theta_hat, steps = floor(X[:700], Y[:700], epochs=epochs)
        assert steps == epochs * 22
        assert float(torch.norm(theta - theta_hat)) < 1e-3


def test_the_floor_adam_is_torchs_adam():
    _, X, Y = make_problem()
    theta = torch.zeros(2, requires_grad=True)
    adam = torch.optim.Adam([theta], lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for rows in torch.randperm(700, generator=g).split(32):
            adam.zero_grad()
            torch.mean((X[rows] @ theta - Y[rows]) ** 2).backward()
            adam.step()
    theta_hat, _ = floor_adam(X[:700], Y[:700], epochs=3)
    torch.testing.assert_close(theta_hat, theta.detach())


@pytest.mark.slow
def test_a_process_trees_memory_is_the_sum_of_its_processes(tmp_path):
    # A parent holding ~200 MB that starts a child holding ~200 MB: the tree's peak counts both.
    hold = "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])"  # touch every page
    child = f"import time; {hold}; time.sleep(3)"  # long enough for a sampler on a busy machine
    parent = f"import subprocess, sys; {hold}; subprocess.run([sys.executable, '-c', {child!r}])"
    measured = run_process(["-c", parent], tmp_path)
    alone = run_process(["-c", child], tmp_path)
    assert measured.peak_mb > 400 and alone.peak_mb < 300
    assert measured.cpu > 0 and measured.wall >= 0.5


@pytest.mark.slow
def test_smoke_run_writes_every_figure(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"
    results = main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    p2b = results["P2b"]["runs"]
    figures = [
        *(v for m in ("sgd", "adam") for v in results["P1"][m]["steps_per_s"].values()),
        *results["P2"]["seconds"].values(),
        *(v for run in p2b.values() for v in run.values()),
        results["P4"]["copy_GBps"],
        results["P4"]["gd_GBps"],
        *results["P5"]["seconds"].values(),
        *results["P6"]["trials_per_min"].values(),
        *results["P6"]["best_value"].values(),
    ]
    assert all(math.isfinite(f) and f > 0 for f in figures)
    assert results["P6"]["trials"] == 2
    # P8e counts what the batched sweep stored: 3 seed runs, their group's run and the sweep's parent.
    floor = results["P8"]["seeds"]["mlflow_floor"]
    assert floor["runs"] == 3 + 2 and floor["values"] > 3 * 5 and floor["seconds"] > 0
    assert p2b["descentlab"]["peak_mb"] > p2b["lecture"]["peak_mb"] / 2  # both processes counted
    table = capsys.readouterr().out.splitlines()
    for figure in ("P1 sgd", "P1 adam", "P2 ", "P2b wall", "P2b memory", "P4", "P5", "P6"):
        lines = [line for line in table if line.startswith(figure)]
        assert lines and all(line.endswith((" met", "NOT met")) for line in lines), figure


def test_the_spread_gives_each_ratios_range_and_how_often_it_met_its_target():
    def run(fraction: float) -> dict:
        p4 = {"gd_GBps": fraction, "copy_GBps": 1.0, "fraction": fraction, "met": fraction >= 0.5}
        return {"P4": p4, "machine": {}}

    line = next(row for row in spread([run(0.4), run(0.6), run(0.55)]).splitlines() if row.startswith("P4"))
    assert line.split() == ["P4", "GB/s", "0.40x", "0.55x", "0.60x", ">=", "0.5x", "2", "of", "3"]
