"""The benchmark suite in smoke mode (CI proves it runs; figures are printed, never asserted)."""

from __future__ import annotations

import json
import math

import torch

from benchmarks.lecture import lecture_sgd, make_problem
from benchmarks.run import floor_sgd, main


def test_the_baselines_are_real_sgd_that_recover_theta():
    theta, X, Y = make_problem()
    model, steps = lecture_sgd(X[:700], Y[:700], epochs=20)
    assert steps == 20 * 22  # ⌈700 / 32⌉ batches per epoch
    assert float(torch.norm(theta - model.weight.detach().squeeze())) < 1e-3
    theta_hat, steps = floor_sgd(X[:700], Y[:700], epochs=20)
    assert steps == 20 * 22
    assert float(torch.norm(theta - theta_hat)) < 1e-3


def test_smoke_run_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    results = main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    figures = [
        *results["P1"]["steps_per_s"].values(),
        *results["P2"]["seconds"].values(),
        *results["P3"]["trials_per_min"].values(),
        results["P4"]["copy_GBps"],
        results["P4"]["gd_GBps"],
        *results["P5"]["seconds"].values(),
    ]
    assert all(math.isfinite(f) and f > 0 for f in figures)
    table = capsys.readouterr().out
    assert all(f"P{i}" in table for i in range(1, 6))
