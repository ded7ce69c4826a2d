"""Benchmarks P1–P5, each measured side by side in the same run so that ratios hold on a noisy machine.

    python -m benchmarks.run            # full sizes; prints a table, writes bench-results/bench.json
    python -m benchmarks.run --smoke    # tiny sizes: proves the suite still works (CI)

P1 training-loop steps/s: the lecture's loop vs descentlab's loop vs a hand-written floor.
P2 whole-process wall time of `python -m src.train` vs the lecture's script, same work.
P3 sweep trials/min: one process for all trials vs one process per trial.
P4 full-batch GD on N×M float32: bytes moved per second vs a copy's bandwidth.
P5 MLflow logging overhead on a 300-epoch run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.lecture import lecture_sgd, make_problem

ROOT = Path(__file__).resolve().parents[1]


Timed = Callable[[], float]  # runs the work once, returns the seconds that count


def timed(fn: Callable[[], Any]) -> Timed:
    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def interleaved(fns: dict[str, Timed], repeats: int) -> dict[str, float]:
    """Median seconds of each fn, alternating between them so that machine noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up: imports, allocator, first-call overheads
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(fn())
    return {name: statistics.median(t) for name, t in times.items()}


def floor_sgd(
    X: torch.Tensor, Y: torch.Tensor, epochs: int, batch_size: int = 32, lr: float = 0.1
) -> tuple[torch.Tensor, int]:
    """The practical floor: analytic gradient 2/|B| X_Bᵀ(X_B θ − y_B), in-place update, no autograd.

    Returns (θ̂, steps)."""
    g = torch.Generator().manual_seed(0)
    theta = torch.zeros(X.shape[1])
    steps = 0
    for _ in range(epochs):
        for rows in torch.randperm(len(Y), generator=g).split(batch_size):
            xb, yb = X[rows], Y[rows]
            theta.sub_(xb.T @ (xb @ theta - yb), alpha=2 * lr / len(rows))
            steps += 1
    return theta, steps


def descentlab_fit(*overrides: str) -> Timed:
    """descentlab's loop on a freshly built run; only `fit` is timed, not data generation."""
    from src.loop import fit
    from src.train import build, compose

    cfg = compose("tracking=none", "trainer.progress=false", "trainer.stopping_threshold=null",
                  "trainer.patience=1000000", *overrides)  # fmt: skip

    def run() -> float:
        parts = build(cfg)
        start = time.perf_counter()
        fit(**parts)
        return time.perf_counter() - start

    return run


def p1_loop(epochs: int, repeats: int) -> dict[str, Any]:
    _, X, Y = make_problem()
    X, Y = X[:700], Y[:700]
    steps = epochs * -(-700 // 32)
    times = interleaved(
        {
            "lecture": timed(lambda: lecture_sgd(X, Y, epochs)),
            "descentlab": descentlab_fit(f"trainer.max_epochs={epochs}"),
            "floor": timed(lambda: floor_sgd(X, Y, epochs)),
        },
        repeats,
    )
    rate = {name: steps / t for name, t in times.items()}
    return {
        "steps_per_s": rate,
        "descentlab_vs_lecture": rate["descentlab"] / rate["lecture"],
        "floor_vs_descentlab": rate["floor"] / rate["descentlab"],
        "target": "descentlab >= 5x lecture and floor <= 2x descentlab",
    }


def process_seconds(args: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def p2_process(epochs: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        train = ["-m", "src.train", f"trainer.max_epochs={epochs}", "trainer.patience=1000000",
                 "trainer.stopping_threshold=null", "trainer.progress=false",
                 f"hydra.run.dir={tmp}/out"]  # fmt: skip
        times = interleaved(
            {
                "lecture": lambda: process_seconds(["-m", "benchmarks.lecture", str(epochs)], cwd),
                "descentlab": lambda: process_seconds(train, cwd),
                "descentlab_no_tracking": lambda: process_seconds([*train, "tracking=none"], cwd),
            },
            repeats,
        )
    return {
        "seconds": times,
        "descentlab_vs_lecture": times["descentlab"] / times["lecture"],
        "target": "<= 1.0",
    }


def p3_sweep(trials: int, epochs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        lrs = [f"{0.01 + 0.01 * i:.2f}" for i in range(trials)]
        common = [f"trainer.max_epochs={epochs}", "trainer.progress=false", "tracking=none"]
        one = process_seconds(["-m", "src.train", "--multirun", f"optimizer.lr={','.join(lrs)}", *common,
                               f"hydra.sweep.dir={tmp}/sweep"], cwd)  # fmt: skip
        each = sum(
            process_seconds(
                ["-m", "src.train", f"optimizer.lr={lr}", *common, f"hydra.run.dir={tmp}/r{lr}"], cwd
            )
            for lr in lrs
        )
    per_minute = {"one_process": 60 * trials / one, "process_per_trial": 60 * trials / each}
    return {
        "trials_per_min": per_minute,
        "ratio": per_minute["one_process"] / per_minute["process_per_trial"],
        "target": ">= 3",
    }


def p4_bandwidth(n: int, m: int, epochs: int, repeats: int) -> dict[str, Any]:
    X = torch.randn(n, m)
    dst = torch.empty_like(X)
    copy_s = interleaved({"copy": timed(lambda: dst.copy_(X))}, repeats)["copy"]
    copy_bw = 2 * X.nbytes / copy_s  # read + write
    fit = descentlab_fit("optimizer=gd", f"data.n={int(n / 0.7) + 1}", f"data.dim={m}", "data.train_prop=0.7",
                         f"trainer.max_epochs={epochs}")  # fmt: skip
    fit_s = interleaved({"fit": fit}, repeats)["fit"]
    # One GD step must read X_train twice: X θ (forward) and Xᵀ r (backward).
    useful_bytes = 2 * X.nbytes * epochs
    gd_bw = useful_bytes / fit_s
    return {
        "copy_GBps": copy_bw / 1e9,
        "gd_GBps": gd_bw / 1e9,
        "fraction": gd_bw / copy_bw,
        "target": ">= 0.5",
    }


def p5_logging(epochs: int, repeats: int) -> dict[str, Any]:
    from src.train import compose, train

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        common = ["trainer.progress=false", f"trainer.max_epochs={epochs}", "trainer.patience=1000000",
                  "trainer.stopping_threshold=null"]  # fmt: skip

        def run(mode: str) -> Callable[[], Any]:
            return timed(lambda: train(compose(*common, f"tracking={mode}")))

        times = interleaved({"none": run("none"), "mlflow": run("mlflow")}, repeats)
        del os.environ["MLFLOW_TRACKING_URI"]
    return {"seconds": times, "overhead": times["mlflow"] / times["none"] - 1, "target": "< 0.05"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the suite works")
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    smoke = args.smoke
    results = {
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "P1": p1_loop(epochs=2 if smoke else 50, repeats=1 if smoke else 5),
        "P2": p2_process(epochs=5 if smoke else 300, repeats=1 if smoke else 3),
        "P3": p3_sweep(trials=2 if smoke else 20, epochs=2 if smoke else 50),
        "P4": p4_bandwidth(
            n=10_000 if smoke else 1_000_000,
            m=5 if smoke else 50,
            epochs=2 if smoke else 20,
            repeats=1 if smoke else 3,
        ),
        "P5": p5_logging(epochs=10 if smoke else 300, repeats=1 if smoke else 5),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(report(results))
    print(f"wrote {args.out}")
    return results


def report(r: dict[str, Any]) -> str:
    p1, p2, p3, p4, p5 = (r[k] for k in ("P1", "P2", "P3", "P4", "P5"))
    s = p1["steps_per_s"]
    rows = [
        ("P1 loop steps/s", " | ".join(f"{k} {v:,.0f}" for k, v in s.items()),
         f"{p1['descentlab_vs_lecture']:.2f}x lecture, floor {p1['floor_vs_descentlab']:.2f}x", p1["target"]),
        ("P2 process s", " | ".join(f"{k} {v:.2f}" for k, v in p2["seconds"].items()),
         f"{p2['descentlab_vs_lecture']:.2f}x lecture", p2["target"]),
        ("P3 trials/min", " | ".join(f"{k} {v:.1f}" for k, v in p3["trials_per_min"].items()),
         f"{p3['ratio']:.2f}x", p3["target"]),
        ("P4 GB/s", f"copy {p4['copy_GBps']:.2f} | GD {p4['gd_GBps']:.2f}",
         f"{100 * p4['fraction']:.0f}% of copy", p4["target"]),
        ("P5 run s", " | ".join(f"{k} {v:.3f}" for k, v in p5["seconds"].items()),
         f"+{100 * p5['overhead']:.1f}%", p5["target"]),
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


if __name__ == "__main__":
    main()
