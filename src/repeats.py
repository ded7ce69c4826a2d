"""Repeats: runs of one configuration that differ only in `seed`. Their statistics — n, mean and 95%
t-interval (`spread`, the one place they are computed) — what a group of them records in MLflow
(`group_metrics`, `group_params`), and the paired comparison of two configurations run on the same
seeds (`paired`).

The seed draws the data (its split, or its sample for simulated data) as well as the batches, so
two configurations run with seed 3 saw the same data: their difference on seed 3 is free of that
draw's luck. Differences taken seed by seed (paired) are far less noisy than two means compared side
by side, and Student's paired t-test on them is `scipy.stats.ttest_rel`'s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities import Run

SEED_PARAM = "seed"
SEED_WORD = re.compile(r"(?:^| )seed=(\S+)")
LEVEL = 0.95  # of every interval and test here (two-sided)


@dataclass(frozen=True)
class Spread:
    """A metric over the seeds of one configuration: how many, their mean and sample standard
    deviation (nan for one seed). The statistics of repeats: the comparison's table and bands, the
    groups' MLflow runs and the Optuna sweeper's trials with repeats use these and no other."""

    n: int
    mean: float
    sd: float

    @property
    def se(self) -> float:
        """The standard error of the mean, s/√n (nan for one seed)."""
        return self.sd / math.sqrt(self.n)

    def interval(self) -> tuple[float, float]:
        """The 95% t-interval, mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (Student's t); nan, nan for one seed."""
        if self.n < 2:
            return math.nan, math.nan
        from scipy import stats

        half = float(stats.t.ppf(0.5 + LEVEL / 2, self.n - 1)) * self.se
        return self.mean - half, self.mean + half

    def p_value(self) -> float:
        """Two-sided p-value of Student's t-test that the true mean is 0 (for differences taken seed
        by seed: the paired t-test); nan for one seed. All values equal: 1 if they are 0, else 0."""
        if self.n < 2:
            return math.nan
        if self.sd == 0:
            return 1.0 if self.mean == 0 else 0.0
        from scipy import stats

        return float(2 * stats.t.sf(abs(self.mean / self.se), self.n - 1))


def spread(values: Sequence[float]) -> Spread:
    """n, mean and sample standard deviation (n − 1 in the denominator) of a metric over seeds."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return Spread(n, mean, sd)


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval (Student's t with n − 1 degrees of freedom); n = 1: no interval."""
    stats = spread(values)
    return (stats.mean, *stats.interval())


def finite(runs: Iterable[Run], metric: str) -> list[float]:
    found = (r.data.metrics.get(metric) for r in runs)
    return [v for v in found if v is not None and math.isfinite(v)]


def seed_of(run: Run) -> str | None:
    """The run's seed: its `seed` param, else the `seed=` of its overrides or name."""
    if SEED_PARAM in run.data.params:
        return run.data.params[SEED_PARAM]
    for text in (run.data.tags.get("overrides", ""), run.info.run_name or ""):
        if found := SEED_WORD.search(text):
            return found.group(1)
    return None


def group_metrics(runs: Sequence[Run], metrics: Iterable[str]) -> dict[str, float]:
    """What a group of seeds records, per metric as the runs table's columns: `<metric>_n`,
    `<metric>_mean` and, from two seeds on, the 95% t-interval `<metric>_ci_low`, `<metric>_ci_high`."""
    out: dict[str, float] = {}
    for metric in dict.fromkeys(metrics):
        values = finite(runs, metric)
        if not values:
            continue
        stats = spread(values)
        out |= {f"{metric}_n": stats.n, f"{metric}_mean": stats.mean}
        if stats.n > 1:
            out[f"{metric}_ci_low"], out[f"{metric}_ci_high"] = stats.interval()
    return out


def group_params(runs: Sequence[Run]) -> dict[str, str]:
    """The configuration the seeds share: every param with one value in all of them, less `seed`."""
    if not runs:
        return {}
    first, *rest = (r.data.params for r in runs)
    return {k: v for k, v in first.items() if k != SEED_PARAM and all(p.get(k) == v for p in rest)}


@dataclass(frozen=True)
class Paired:
    """A configuration against the best one on the seeds both ran: the mean of the per-seed
    differences (configuration − best) relative to the best's mean on those seeds, its 95%
    t-interval, and the two-sided p-value of the paired t-test (`scipy.stats.ttest_rel`'s)."""

    name: str
    best: str
    metric: str
    n: int
    relative: float  # mean difference / the best's mean: +0.01 is 1% higher
    low: float
    high: float
    p: float

    def verdict(self) -> str:
        """One line: `sgd vs nesterov: +0.30% [-0.20%, +0.80%], p = 0.22 over 5 paired seeds: no
        detectable difference`."""
        head = f"{self.name} vs {self.best}: "
        if self.n < 2:
            return head + f"{percent(self.relative)} on {self.n} paired seed: too few to test"
        if self.relative == self.low == self.high == 0:
            return head + f"equal on every one of {self.n} paired seeds"
        digits = decimals(self.relative, self.low, self.high)
        numbers = ", ".join(percent(v, digits) for v in (self.low, self.high))
        if self.p < 1 - LEVEL:
            direction = "higher" if self.relative > 0 else "lower"
            outcome = f"{self.metric} detectably {direction}"
        else:
            outcome = "no detectable difference"
        return (
            f"{head}{percent(self.relative, digits)} [{numbers}], p {p_text(self.p)} "
            f"over {self.n} paired seeds: {outcome}"
        )


def paired(
    name: str, best: str, metric: str, values: dict[str, float], best_values: dict[str, float]
) -> Paired:
    """`name`'s values against the best's on the seeds both have (dicts seed -> value)."""
    seeds = [s for s in values if s in best_values]
    if not seeds:
        return Paired(name, best, metric, 0, math.nan, math.nan, math.nan, math.nan)
    scale = abs(spread([best_values[s] for s in seeds]).mean) or math.nan
    stats = spread([(values[s] - best_values[s]) / scale for s in seeds])
    low, high = stats.interval()
    return Paired(name, best, metric, stats.n, stats.mean, low, high, stats.p_value())


def decimals(*values: float) -> int:
    """Decimals that give the largest of `values`, as a percentage, two significant digits."""
    largest = max((abs(100 * v) for v in values if math.isfinite(v) and v != 0), default=1.0)
    return max(0, 1 - math.floor(math.log10(largest)))


def percent(value: float, digits: int | None = None) -> str:
    if not math.isfinite(value):
        return "nan"
    return f"{100 * value:+.{decimals(value) if digits is None else digits}f}%"


def p_text(p: float) -> str:
    """`= 0.22`, `= 0.041`, `< 0.001`."""
    return "= nan" if math.isnan(p) else "< 0.001" if p < 1e-3 else f"= {p:.2g}"
