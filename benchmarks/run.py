"""Benchmarks P1, P2, P2b, P4, P5, P6, each measured side by side in the same run so that ratios hold on
a noisy machine (alternating repetitions, medians).

    python -m benchmarks.run            # full sizes; prints a table, writes bench-results/bench.json
    python -m benchmarks.run --smoke    # tiny sizes: proves the suite still works (CI)

P1  training-loop steps/s, SGD and Adam: the lecture's loop vs descentlab's loop vs a hand-written floor.
P2  whole-process wall time of a default `python -m src.train` (MLflow on) vs the lecture's SGD script.
P2b the lecture's plain Adam script vs descentlab on the same problem, MLflow on: wall, CPU, memory
    (memory: the sum of the peak RSS of every process the run starts).
P4  full-batch GD on N×M float32: bytes moved per second vs a copy's bandwidth.
P5  MLflow's whole cost on a 300-epoch run: P2's process with MLflow vs with `tracking=none`.
P6  a 20-trial Optuna sweep (+experiment=lecture_sweep, pruning, joblib with 2 workers) vs the same
    trials run one process per trial (two at a time, unpruned), both tracked in MLflow: trials per
    minute, and the best value reached.
P7  how fast a mistake answers: a misspelt key, a bad value, formula and weights errors, and --help,
    each a whole `python -m src.train` process (benchmarks/mistakes.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks import batched, mistakes
from benchmarks.lecture import lecture_adam, lecture_sgd, make_problem

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["trainer.progress=false", "trainer.patience=1000000", "trainer.stopping_threshold=null"]


Timed = Callable[[], float]  # runs the work once, returns the seconds that count


def timed(fn: Callable[[], Any]) -> Timed:
    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, key: Callable[[Any], float] = float) -> dict:
    """The median result of each fn (by `key`), alternating between them so that machine noise hits
    all alike. One repetition (smoke) goes without the warm-up: it only proves the work runs."""
    results: dict[str, list[Any]] = {name: [] for name in fns}
    for fn in fns.values() if repeats > 1 else ():
        fn()  # warm-up: imports, allocator, first-call overheads, page cache, a new MLflow store
    for _ in range(repeats):
        for name, fn in fns.items():
            results[name].append(fn())
    return {name: sorted(r, key=key)[(len(r) - 1) // 2] for name, r in results.items()}


# ------------------------------------------------------------------------------------------- P1
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


def floor_adam(
    X: torch.Tensor, Y: torch.Tensor, epochs: int, batch_size: int = 32, lr: float = 1e-3
) -> tuple[torch.Tensor, int]:
    """The floor for Adam: the analytic gradient and Adam's update written out in place.

    Returns (θ̂, steps)."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    g = torch.Generator().manual_seed(0)
    theta = torch.zeros(X.shape[1])
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    steps = 0
    for _ in range(epochs):
        for rows in torch.randperm(len(Y), generator=g).split(batch_size):
            xb, yb = X[rows], Y[rows]
            grad = (xb.T @ (xb @ theta - yb)).mul_(2 / len(rows))
            steps += 1
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = v.sqrt().div_(math.sqrt(1 - beta2**steps)).add_(eps)
            theta.addcdiv_(m, denom, value=-lr / (1 - beta1**steps))
    return theta, steps


def descentlab_fit(*overrides: str) -> Timed:
    """descentlab's loop on a freshly built run; only `fit` is timed, not data generation."""
    from src.loop import fit
    from src.train import build, compose

    cfg = compose("tracking=none", *QUIET, *overrides)

    def run() -> float:
        parts = build(cfg)
        start = time.perf_counter()
        fit(parts)
        return time.perf_counter() - start

    return run


def p1_loop(epochs: int, repeats: int) -> dict[str, Any]:
    _, X, Y = make_problem()
    X, Y = X[:700], Y[:700]
    steps = epochs * -(-700 // 32)
    out: dict[str, Any] = {}
    methods: list[tuple[str, Callable[..., Any], Callable[..., Any], float]] = [
        ("sgd", lecture_sgd, floor_sgd, 0.1),
        ("adam", lecture_adam, floor_adam, 1e-3),
    ]
    for method, lecture, floor, lr in methods:
        ours = descentlab_fit(f"optimizer={method}", f"optimizer.lr={lr}", f"trainer.max_epochs={epochs}")
        times = interleaved(
            {
                "lecture": timed(partial(lecture, X, Y, epochs)),
                "descentlab": ours,
                "floor": timed(partial(floor, X, Y, epochs)),
            },
            repeats,
        )
        rate = {name: steps / t for name, t in times.items()}
        vs_lecture, floor_ahead = rate["descentlab"] / rate["lecture"], rate["floor"] / rate["descentlab"]
        out[method] = {
            "steps_per_s": rate,
            "descentlab_vs_lecture": vs_lecture,
            "floor_vs_descentlab": floor_ahead,
            "met": vs_lecture >= 5 and floor_ahead <= 2,
        }
    out["target"] = "descentlab >= 5x lecture and floor <= 2x descentlab, SGD and Adam"
    out["met"] = all(out[m]["met"] for m in ("sgd", "adam"))
    return out


# -------------------------------------------------------------------------------- whole processes
@dataclass
class Process:
    wall: float  # seconds
    cpu: float  # user + system seconds of the process and every process it started
    peak_mb: float  # sum over those processes of each one's peak resident memory


def tree_peaks(root: int, peaks: dict[int, int]) -> None:
    """Record VmHWM (peak RSS, kB) of `root` and its descendants, found through /proc."""
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                hwm = re.search(r"VmHWM:\s+(\d+)", f.read())
            for task in os.listdir(f"/proc/{pid}/task"):  # children are listed per thread
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    frontier.extend(int(child) for child in f.read().split())
        except OSError:  # it just ended
            continue
        if hwm:
            peaks[pid] = max(peaks.get(pid, 0), int(hwm.group(1)))


def run_process(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Process:
    """`python <args>` in `cwd`, measured: wall time, CPU time and the sum of peak memories of its
    process tree (VmHWM, a high-water mark, sampled every 20 ms from /proc)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    peaks: dict[int, int] = {}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            tree_peaks(proc.pid, peaks)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stderr is not None
    stderr = proc.stderr.read()  # until the process closes it
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    # Peaks come from /proc's VmHWM only: wait4's ru_maxrss would also count the RSS this (large)
    # measuring process had when it forked the child, which Linux carries across exec.
    # wait4's CPU times count the process and the children it waited for (joblib workers).
    return Process(wall=wall, cpu=usage.ru_utime + usage.ru_stime, peak_mb=sum(peaks.values()) / 1024)


def processes(fns: dict[str, Callable[[], Process]], repeats: int) -> dict[str, Process]:
    return interleaved(fns, repeats, key=lambda p: p.wall)


def p2_process(epochs: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        train = ["-m", "src.train", f"trainer.max_epochs={epochs}", *QUIET, f"hydra.run.dir={tmp}/out"]
        runs = processes(
            {
                "lecture": lambda: run_process(["-m", "benchmarks.lecture", str(epochs)], cwd),
                "descentlab": lambda: run_process(train, cwd),
                "descentlab_no_tracking": lambda: run_process([*train, "tracking=none"], cwd),
            },
            repeats,
        )
    seconds = {name: p.wall for name, p in runs.items()}
    ratio = seconds["descentlab"] / seconds["lecture"]
    return {"seconds": seconds, "descentlab_vs_lecture": ratio, "target": "<= 0.7x", "met": ratio <= 0.7}


def p2b_adam(epochs: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        train = ["-m", "src.train", "optimizer=adam", "optimizer.lr=1e-3", "schedule=step",
                 "schedule.step_size=20", "schedule.gamma=0.95", "trainer.batch_size=16",
                 f"trainer.max_epochs={epochs}", *QUIET, f"hydra.run.dir={tmp}/out"]  # fmt: skip
        runs = processes(
            {
                "lecture": lambda: run_process(["-m", "benchmarks.lecture_adam", str(epochs)], cwd),
                "descentlab": lambda: run_process(train, cwd),
            },
            repeats,
        )
    ours, theirs = runs["descentlab"], runs["lecture"]
    wall, cpu, memory = ours.wall / theirs.wall, ours.cpu / theirs.cpu, ours.peak_mb / theirs.peak_mb
    return {
        "runs": {name: asdict(p) for name, p in runs.items()},
        "wall_ratio": wall,
        "cpu_ratio": cpu,
        "memory_ratio": memory,
        "target": "wall <= 0.6x, memory <= 1.5x",
        "met": wall <= 0.6 and memory <= 1.5,
    }


# ------------------------------------------------------------------------------------------- P4
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
    fraction = gd_bw / copy_bw
    return {
        "copy_GBps": copy_bw / 1e9,
        "gd_GBps": gd_bw / 1e9,
        "fraction": fraction,
        "target": ">= 50%",
        "met": fraction >= 0.5,
    }


# ------------------------------------------------------------------------------------------- P5
def p5_logging(p2: dict[str, Any]) -> dict[str, Any]:
    """From P2's runs: the same process with and without MLflow, imports and all."""
    seconds = {"none": p2["seconds"]["descentlab_no_tracking"], "mlflow": p2["seconds"]["descentlab"]}
    overhead = seconds["mlflow"] / seconds["none"] - 1
    return {"seconds": seconds, "overhead": overhead, "target": "< 10%", "met": overhead < 0.1}


# ------------------------------------------------------------------------------------------- P6
SWEPT = ("optimizer.lr", "schedule.step_size", "trainer.batch_size")


def no_worse(best: dict[str, float]) -> bool:
    return best["sweep"] <= best["process_per_trial"] * (1 + 1e-3)


def p6_sweep(trials: int, max_epochs: int) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        common = ["+experiment=lecture_sweep", "trainer.progress=false", f"trainer.max_epochs={max_epochs}"]
        sweep = run_process(["-m", "src.train", "--multirun", *common, "hydra/launcher=joblib",
                             "hydra.sweeper.n_jobs=2", f"hydra.sweeper.n_trials={trials}",
                             "hydra.sweeper.sampler.seed=0",
                             f"hydra.sweeper.pruner.max_resource={max_epochs}",
                             f"hydra.sweep.dir={tmp}/sweep"], cwd)  # fmt: skip
        study = optuna.load_study(
            study_name="lecture_sweep",
            storage=optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(cwd / "multirun" / "optuna.journal"))
            ),
        )
        finished = [t for t in study.trials if t.state.is_finished()]
        sweep_best = study.best_value

        def one(trial: optuna.trial.FrozenTrial) -> float:
            overrides = [f"{key}={trial.params[key]}" for key in SWEPT]
            out = cwd / f"trial{trial.number}"
            run_process(["-m", "src.train", *common, *overrides, f"hydra.run.dir={out}"], cwd)
            return float(re.findall(r"best val loss (\S+)", (out / "train.log").read_text())[-1])

        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:  # the same two at a time as the sweep's workers
            each_best = min(pool.map(one, finished))
        each = time.perf_counter() - start
    per_minute = {"sweep": 60 * len(finished) / sweep.wall, "process_per_trial": 60 * len(finished) / each}
    ratio = per_minute["sweep"] / per_minute["process_per_trial"]
    return {
        "trials": len(finished),
        "trials_per_min": per_minute,
        "ratio": ratio,
        "best_value": {"sweep": sweep_best, "process_per_trial": each_best},
        "target": ">= 5x, best value no worse",
        "met": ratio >= 5 and no_worse({"sweep": sweep_best, "process_per_trial": each_best}),
    }


FIGURES = ("P1", "P2", "P2b", "P4", "P5", "P6", "P7", "P8")


def measure_once(only: set[str], smoke: bool) -> dict[str, Any]:
    measure: dict[str, Callable[[], dict[str, Any]]] = {
        "P1": lambda: p1_loop(epochs=2 if smoke else 50, repeats=1 if smoke else 5),
        "P2": lambda: p2_process(epochs=5 if smoke else 300, repeats=1 if smoke else 3),
        "P2b": lambda: p2b_adam(epochs=5 if smoke else 500, repeats=1 if smoke else 3),
        "P4": lambda: p4_bandwidth(
            n=10_000 if smoke else 1_000_000,
            m=5 if smoke else 50,
            epochs=2 if smoke else 20,
            repeats=1 if smoke else 3,
        ),
        "P6": lambda: p6_sweep(trials=2 if smoke else 20, max_epochs=10 if smoke else 300),
        "P7": lambda: mistakes.p7_mistakes(repeats=1 if smoke else 3),
        # hydra/launcher=batched: 100 seeds (a), 4 methods x 5 seeds (b), 20 Optuna trials (c),
        # MLflow's share (d)
        "P8": lambda: {
            "seeds": batched.p8_seeds(seeds=3 if smoke else 100, epochs=5 if smoke else 300),
            "methods": batched.p8_methods(seeds=1 if smoke else 5, epochs=5 if smoke else 300),
            "trials": batched.p8_trials(
                trials=2 if smoke else 20, n_jobs=2 if smoke else 10, epochs=10 if smoke else 300
            ),
        },
    }
    machine = {"cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    results: dict[str, Any] = {"machine": {**machine, "load_before": os.getloadavg()}}
    results |= {name: fn() for name, fn in measure.items() if name in only}
    if "P5" in only:
        results["P5"] = p5_logging(results["P2"])
    results["machine"]["load_after"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=" ".join(__doc__.split("\n\n")[0].split())
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the suite works")
    parser.add_argument("--only", default=",".join(FIGURES), help="the figures to measure, e.g. P2,P2b")
    parser.add_argument("--runs", type=int, default=1, help="whole runs of the suite; more than one adds "
                        "a table of each ratio's spread and how often its target was met")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench.json"))
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if only - set(FIGURES):
        parser.error(f"--only {args.only}: the figures are {', '.join(FIGURES)}")
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: at least 1")
    if "P5" in only:
        only.add("P2")  # P5 is read from P2's runs
    torch.set_num_threads(max(1, torch.get_num_threads()))
    runs = []
    for i in range(args.runs):
        runs.append(measure_once(only, args.smoke))
        print(f"run {i + 1} of {args.runs}:" if args.runs > 1 else "", report(runs[-1]), sep="\n", flush=True)
    results = runs[0] if args.runs == 1 else {"runs": runs}
    if args.runs > 1:
        print(f"spread across the {args.runs} runs:\n{spread(runs)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return results


Row = tuple[str, float, str, float, float, str, bool | None]  # the table's columns, below
COLUMNS = ["figure", "descentlab", "vs", "other", "ratio", "target", "met"]


def rows(name: str, f: dict[str, Any]) -> list[Row]:
    """The table's rows of one figure: descentlab's value, what it is compared with, their ratio
    (descentlab / other, except where the target reads the other way), the target, met or not."""
    if name == "P1":
        out: list[Row] = []
        for m in ("sgd", "adam"):
            rate = f[m]["steps_per_s"]
            out += [
                (f"P1 {m} steps/s", rate["descentlab"], "lecture", rate["lecture"],
                 f[m]["descentlab_vs_lecture"], ">= 5x", f[m]["descentlab_vs_lecture"] >= 5),
                (f"P1 {m} floor steps/s", rate["descentlab"], "floor", rate["floor"],
                 f[m]["floor_vs_descentlab"], "floor <= 2x", f[m]["floor_vs_descentlab"] <= 2),
            ]  # fmt: skip
        return out
    if name in ("P2", "P5"):
        s = f["seconds"]
        ours, other = ("descentlab", "lecture") if name == "P2" else ("mlflow", "none")
        vs = "lecture" if name == "P2" else "tracking=none"
        target = f["target"] if name == "P2" else "< 1.1x"  # P5's "< 10%" as a ratio
        return [(f"{name} process s", s[ours], vs, s[other], s[ours] / s[other], target, f["met"])]
    if name == "P2b":
        ours, theirs = f["runs"]["descentlab"], f["runs"]["lecture"]
        wall, cpu, mem = f["wall_ratio"], f["cpu_ratio"], f["memory_ratio"]
        return [
            ("P2b wall s", ours["wall"], "lecture", theirs["wall"], wall, "<= 0.6x", wall <= 0.6),
            ("P2b CPU s", ours["cpu"], "lecture", theirs["cpu"], cpu, "", None),  # reported, no target
            ("P2b memory MB", ours["peak_mb"], "lecture", theirs["peak_mb"], mem, "<= 1.5x", mem <= 1.5),
        ]
    if name == "P7":
        return mistakes.rows(f)
    if name == "P8":
        return batched.rows(f)
    if name == "P4":
        return [("P4 GB/s", f["gd_GBps"], "copy", f["copy_GBps"], f["fraction"], ">= 0.5x", f["met"])]
    rate, best = f["trials_per_min"], f["best_value"]
    return [
        (f"P6 trials/min ({f['trials']})", rate["sweep"], "per process", rate["process_per_trial"],
         f["ratio"], ">= 5x", f["ratio"] >= 5),
        ("P6 best value", best["sweep"], "per process", best["process_per_trial"],
         best["sweep"] / best["process_per_trial"], "no worse", no_worse(best)),
    ]  # fmt: skip


def table_of(r: dict[str, Any]) -> Any:
    import pandas as pd  # only for the tables: a run that measures P1 alone need not import it

    figures = [row for name in FIGURES if name in r for row in rows(name, r[name])]
    return pd.DataFrame(figures, columns=COLUMNS)


def met_count(met: Any) -> str:
    """ "k of n" runs that met the target; blank for a row without one."""
    return f"{int(met.astype(bool).sum())} of {len(met)}" if met.notna().all() else ""


def spread(runs: list[dict[str, Any]]) -> str:
    """Each comparison's ratio over the runs (lowest, median, highest) and how often it met its target."""
    import pandas as pd

    tables = pd.concat([table_of(r) for r in runs])
    stats = tables.groupby("figure", sort=False).agg(
        lowest=("ratio", "min"), median=("ratio", "median"), highest=("ratio", "max"),
        target=("target", "first"), met=("met", met_count),
    )  # fmt: skip
    return stats.to_string(
        index_names=False, formatters={c: "{:.2f}x".format for c in ("lowest", "median", "highest")}
    )


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def report(r: dict[str, Any]) -> str:
    table = table_of(r)
    table["met"] = table["met"].map({True: "met", False: "NOT met", None: ""})
    text = table.set_index("figure").to_string(  # the index: left-aligned, each line starts with it
        index_names=False,
        formatters={"descentlab": number, "other": number, "ratio": "{:.2f}x".format},
    )
    load = r["machine"]
    return f"{text}\nload average before {load['load_before'][0]:.2f}, after {load['load_after'][0]:.2f}"


if __name__ == "__main__":
    main()
