"""What a run is called and compared by: its params (the resolved config, less bookkeeping), its
name (the values that tell it apart from its sweep's other runs), its source tags."""

from __future__ import annotations

import functools
import getpass
import math
import shlex
import subprocess
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.config import GROUPS
from src.redaction import redact

# Settings about recording and running, not about what is computed; `config.yaml` keeps them all.
NOT_PARAMS = (
    "resume",
    "warm_start",
    "tracking",
    "trainer.progress",
    "trainer.checkpoint_every",
    "trainer.device",
    "trainer.grad_variance",  # whether a metric is logged
    "trainer.divergence_threshold",  # a guard that names a failed run (stop_reason), not a setting
    "trainer.grad_rtol",  # likewise: the evidence "converged" also needs
    "inference.min_digits",  # likewise: what the `converged` tag needs
)


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as dotted keys, e.g. {'optimizer.lr': '0.1'}; Hydra's `_x_` flags dropped."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_" or not (key.startswith("_") and key.endswith("_")):
                    walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "")
    return out


MAX_PARAMS = 25  # what a run logs as params at most; config.yaml keeps the rest
ALWAYS = ("optimizer.lr",)  # a method's step size is a param even at its library default


def params(cfg: DictConfig, choices: dict[str, str], swept: Sequence[str] = ()) -> dict[str, str]:
    """What a reader compares runs by, at most MAX_PARAMS: each group's choice (`optimizer: nesterov`)
    and the seed, then the keys the sweep varies (`swept`), then the other values the run was computed
    with; no `_target_`, nothing null, no bookkeeping (NOT_PARAMS), and no optimizer or schedule
    setting left at its class's own default (Adam's `eps`, SGD's `dampening`) unless swept: those
    say nothing one run of the sweep does differently, and MLflow's compare page opens on the params
    that differ."""
    out = {group: choice(cfg, choices, group) for group in GROUPS if group in cfg}  # by choice, not target
    values: dict[str, str] = {}
    defaults = class_defaults(cfg)
    for key, value in flatten(cfg).items():
        if key == "trainer.batch_size" and value == "None":
            value = "full"  # the whole training split: a value to compare by, as in run names
        dropped = key.endswith("._target_") or value == "None" or (key in defaults and key not in swept)
        if not dropped and not any(key == k or key.startswith(f"{k}.") for k in NOT_PARAMS):
            values[key] = value
    first = [k for k in ("seed", *swept) if k in values]
    ordered = out | {k: values[k] for k in first} | values
    return dict(list(ordered.items())[:MAX_PARAMS])


def class_defaults(cfg: DictConfig) -> set[str]:
    """The optimizer's and schedule's keys whose values are what their class defaults to anyway."""
    import inspect

    from hydra.utils import get_object

    same = set()
    for group in ("optimizer", "schedule"):
        node = cfg.get(group)
        if node is None or "_target_" not in node:
            continue
        try:
            signature = inspect.signature(get_object(str(node._target_)))
        except (ImportError, ValueError, TypeError):  # no signature to read: nothing dropped
            continue
        for key, value in OmegaConf.to_container(node, resolve=True).items():  # type: ignore[union-attr]
            name, given = f"{group}.{key!s}", signature.parameters.get(str(key))
            if given is None or given.default is inspect.Parameter.empty or name in ALWAYS:
                continue
            default = list(given.default) if isinstance(given.default, tuple) else given.default
            if type(default) is type(value) or {type(default), type(value)} == {int, float}:
                same |= {name} if default == value else set()
    return same


def source_tags() -> dict[str, str]:
    """MLflow's own Source, User and Description fields: the entry point, the user, the command line."""
    cli = sys.argv[0].endswith(str(Path("src", "train.py")))  # `python -m src.train`, not a notebook
    command = " ".join(
        shlex.quote(a) for a in (["python", "-m", "src.train"] if cli else sys.argv[:1]) + sys.argv[1:]
    )
    tags = {
        "mlflow.source.name": "src.train" if cli else sys.argv[0],
        "mlflow.source.type": "LOCAL",
        "mlflow.user": getpass.getuser(),
        "mlflow.note.content": redact(command),  # a URL typed with its password: without it
    }
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    return tags


@functools.cache  # one `git rev-parse` a process
def git_commit() -> str | None:
    """The commit of this checkout's HEAD; None outside a git checkout."""
    try:
        repo = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def choice(cfg: DictConfig, choices: dict[str, str], group: str) -> str:
    """The group's choice (`nesterov`); outside Hydra, its target's name (`sgd` for torch.optim.SGD)."""
    target = str(cfg[group].get("_target_", group))
    return choices.get(group) or target.rsplit(".", 1)[-1].lower()


SHORT_KEYS = {
    "trainer.batch_size": "bs",
    "data.condition_number": "κ",
    "regularization.l2": "α",
    "optimizer.momentum": "β",
    "schedule.step_size": "step",
}


def short_number(value: float, digits: int = 3) -> str:
    """`digits` significant digits (3 unless more are needed); exponents as 6.8e-3 and 1e4 outside
    [0.01, 10^4)."""
    rounded = float(f"{value:.{digits}g}")
    if rounded == int(rounded) and abs(rounded) < 1e4:
        return str(int(rounded))
    if 1e-2 <= abs(rounded) < 1e4:
        return f"{rounded:g}" if digits <= 6 else f"{rounded:.{digits}g}"
    mantissa, exponent = f"{rounded:.{digits - 1}e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def separating_digits(values: Sequence[float], least: int = 3, most: int = 12) -> int:
    """The fewest significant digits (at least `least`) at which the distinct values print distinct,
    so that a ranked table never shows two different values alike."""
    distinct = {v for v in values if math.isfinite(v)}
    for digits in range(least, most):
        if len({f"{v:.{digits}g}" for v in distinct}) == len(distinct):
            return digits
    return most


def relative_to_best(value: float, best: float) -> str:
    """How far a row's value is above the best one's, in percent to two significant digits at
    least (`+0.10%`, `+0.0031%`, `+12.00%`), as a ratio from twice the best on (`×2.5`, `×1.88e4`:
    `+1883663.63%` reads as noise); `best` for the best row, `-` where there is no value."""
    if not (math.isfinite(value) and math.isfinite(best)) or best == 0:
        return "-"
    if value == best:
        return "best"
    if best > 0 and value >= 2 * best:
        return f"×{short_number(value / best)}"
    percent = 100 * (value - best) / abs(best)
    decimals = max(2, 1 - int(f"{percent:.1e}".split("e")[1]))  # the exponent of its rounded value
    return f"{percent:+.{decimals}f}%"


def short_value(key: str, value: Any, digits: int = 3) -> str:
    if value is None:
        return "full" if key == "trainer.batch_size" else "none"
    if isinstance(value, float | int) and not isinstance(value, bool):
        return short_number(value, digits)
    if isinstance(value, Enum):  # a choice such as trainer.dtype: `float64`, not `DType.float64`
        return value.name
    return str(value)


def run_name(optimizer: str, values: dict[str, Any], trial: int | None = None, digits: int = 3) -> str:
    """The optimizer, then each value that tells the run apart (`lbfgs κ=1e4`, `adam lr=6.8e-3 bs=16
    #4`), by key: a group's choice bare, any other value as `short key=3 significant digits`."""
    words = [optimizer]
    for key, value in values.items():
        if key in GROUPS:
            words += [] if key == "optimizer" else [str(value)]
        elif key != "seed":
            words.append(f"{short_key(key)}={short_value(key, value, digits)}")
    if trial is not None:
        words.append(f"#{trial}")
    if "seed" in values:  # last: a trial's repeats read `adam lr=1e-3 #4 seed=1`
        words.append(f"seed={values['seed']}")
    return " ".join(words)


def swept_keys(overrides: Sequence[str]) -> list[str]:
    """The keys of a --multirun's sweep overrides (`optimizer=sgd,adam`, `lr=tag(log, ...)`), in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return list(dict.fromkeys(o.key_or_group for o in parsed if o.is_sweep_override()))


def own_keys(overrides: Sequence[str]) -> list[str]:
    """A single run's command-line keys that say what it is (not where it is recorded)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    keys = [o.key_or_group for o in parsed if not o.is_delete()]
    return [k for k in keys if k != "experiment" and not any(k.startswith(b) for b in NOT_PARAMS)]


def short_key(key: str) -> str:
    return SHORT_KEYS.get(key, key.rsplit(".", 1)[-1])


def distinct_names(runs: Sequence[dict[str, str]], trials: Sequence[int | None]) -> list[str]:
    """The names of a sweep's runs, from their params (`params`' order): the optimizer, then every
    value that differs between the runs, those a choice brings with it included (`sgd lr=0.1`,
    `adam lr=0.01`), each in its shortest form that still tells the runs apart (3 significant
    digits, more only where two runs would read alike). A choice's own switches (`nesterov=True`
    of `optimizer=nesterov`) are left to the choice's name."""
    keys = [k for k in runs[0] if all(k in r for r in runs) and len({r[k] for r in runs}) > 1] if runs else []
    switches = [k for k in keys if k.split(".")[0] in keys and {r[k] for r in runs} <= {"True", "False"}]
    keys = [k for k in keys if k not in switches]
    names: list[str] = []
    for digits in range(3, 8):
        names = [
            run_name(r.get("optimizer", "run"), {k: number(r[k]) for k in keys}, trial, digits)
            for r, trial in zip(runs, trials, strict=True)
        ]
        if len(set(names)) == len(names):
            break
    return names


def number(text: str) -> Any:
    """A param's text as the number it reads (`0.05`, `1e-08`, `32`), else the text."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


MAX_PARENT_NAME = 40  # a sweep's parent run name, as MLflow's table and legends show it uncut


def sweep_name(overrides: Sequence[str]) -> str:
    """A sweep's parent run name, at most MAX_PARENT_NAME characters: `sweep` and its overrides
    (`sweep optimizer=sgd,adam`); where that is longer, each swept key with its number of values
    (`sweep optimizer×4 max_epochs=20`), a lesson by its name, bookkeeping left out. The command
    line in full is the run's description."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    kept = [(o, text) for o, text in zip(parsed, overrides, strict=True) if not bookkeeping(o.key_or_group)]
    full = " ".join(["sweep", *(text for _, text in kept)])
    if len(full) <= MAX_PARENT_NAME:
        return full
    words = ["sweep"]
    for override, _ in kept:
        key = override.key_or_group
        if key == "experiment":
            words.append(str(override.value()))
        elif override.is_sweep_override():
            values = list(override.sweep_string_iterator()) if override.is_discrete_sweep() else []
            words.append(f"{short_key(key)}×{len(values)}" if values else f"{short_key(key)}~")
        else:
            words.append(f"{short_key(key)}={override.get_value_element_as_str()}")
    name = " ".join(words)
    return name if len(name) <= MAX_PARENT_NAME else name[: MAX_PARENT_NAME - 1] + "…"


def bookkeeping(key: str) -> bool:
    """Whether a config key is about recording and running, not what is computed (NOT_PARAMS)."""
    return key.startswith("hydra") or any(key == k or key.startswith(f"{k}.") for k in NOT_PARAMS)
