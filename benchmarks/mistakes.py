"""P7: how fast a mistake answers. Each bad command (a misspelt key, a value out of range, a formula
error, a bad weights column) and `--help` as whole processes, `python -m src.train ...` from start
to exit, with its exit status checked (2 for a mistake, 0 for --help): the issue's targets are < 1 s
for a mistake and < 1.5 s for --help. Figures are printed, never asserted."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TABLE = "y,x,w,bad_w,gap_w\n" + "".join(
    f"{i % 7 + 0.1 * i},{i % 5},{1 + i % 3},{-1 if i == 2 else 1},{'' if i == 3 else 1}\n" for i in range(40)
)
CSV = ["+experiment=estimate", "data.path=table.csv"]
CASES: dict[str, tuple[list[str], int, float]] = {  # name: (arguments, exit status, target seconds)
    "--help": (["--help"], 0, 1.5),
    "key typo": (["optimizer.learning_rate=0.1"], 2, 1.0),
    "value out of range": (["optimizer.lr=-1"], 2, 1.0),
    "formula syntax": ([*CSV, "data.formula='y ~ x +'"], 2, 1.0),
    "formula, no regressors": ([*CSV, "data.formula='y ~ 0'"], 2, 1.0),
    "formula, unknown column": ([*CSV, "data.formula='y ~ nope'"], 2, 1.0),
    "weights < 0": ([*CSV, "data.formula='y ~ x'", "data.weights=bad_w"], 2, 1.0),
    "weights NaN": ([*CSV, "data.formula='y ~ x'", "data.weights=gap_w"], 2, 1.0),
}


def seconds(args: list[str], cwd: Path, status: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "src.train", *args], cwd=cwd, env=env, capture_output=True)
    wall = time.perf_counter() - start
    if proc.returncode != status:
        raise RuntimeError(f"{args}: exit {proc.returncode}, not {status}: {proc.stderr.decode()[-500:]}")
    return wall


def p7_mistakes(repeats: int) -> dict[str, Any]:
    """Median whole-process seconds of each case, interleaved over `repeats` rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "table.csv").write_text(TABLE)
        walls: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(repeats):
            for name, (args, status, _) in CASES.items():
                walls[name].append(seconds([*args, f"hydra.run.dir={tmp}/out"], cwd, status))
        for name, code in BASELINES.items():  # what any Python process here costs, for scale
            walls[name] = sorted(baseline(code) for _ in range(repeats))
    median = {name: w[(len(w) - 1) // 2] for name, w in walls.items()}
    return {"seconds": median, "target": {name: target for name, (_, _, target) in CASES.items()}}


BASELINES = {  # for scale: any process; what a formula's check must import (pandas, scipy); torch
    "python -c pass": "pass",
    "python -c 'import hydra, formulaic'": "import hydra.utils, formulaic",
    "python -c 'import torch'": "import torch",
}


def baseline(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def rows(f: dict[str, Any]) -> list[tuple[str, float, str, float, float, str, bool | None]]:
    return [
        (f"P7 {name} s", s, "target s", f["target"][name], s / f["target"][name],
         f"< {f['target'][name]:g} s", s < f["target"][name])
        if name in f["target"]
        else (f"P7 {name} s (scale)", s, "", math.nan, math.nan, "", None)
        for name, s in f["seconds"].items()
    ]  # fmt: skip
