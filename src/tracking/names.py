"""What a run is called and compared by: its params (the resolved config, less bookkeeping), its
name (the values that tell it apart from its sweep's other runs), its source tags."""

from __future__ import annotations

import functools
import getpass
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


def params(cfg: DictConfig, choices: dict[str, str]) -> dict[str, str]:
    """What a reader compares runs by: each group's choice (`optimizer: nesterov`) and the values the
    run was computed with; no `_target_`, nothing null, no bookkeeping (NOT_PARAMS)."""
    out = {group: choice(cfg, choices, group) for group in GROUPS if group in cfg}  # by choice, not target
    for key, value in flatten(cfg).items():
        if key == "trainer.batch_size" and value == "None":
            value = "full"  # the whole training split: a value to compare by, as in run names
        dropped = key.endswith("._target_") or value == "None"
        if not dropped and not any(key == k or key.startswith(f"{k}.") for k in NOT_PARAMS):
            out[key] = value
    return out


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


def short_number(value: float) -> str:
    """3 significant digits; exponents as 6.8e-3 and 1e4 outside [0.01, 10^4)."""
    rounded = float(f"{value:.3g}")
    if rounded == int(rounded) and abs(rounded) < 1e4:
        return str(int(rounded))
    if 1e-2 <= abs(rounded) < 1e4:
        return f"{rounded:g}"
    mantissa, exponent = f"{rounded:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def short_value(key: str, value: Any) -> str:
    if value is None:
        return "full" if key == "trainer.batch_size" else "none"
    if isinstance(value, float | int) and not isinstance(value, bool):
        return short_number(value)
    if isinstance(value, Enum):  # a choice such as trainer.dtype: `float64`, not `DType.float64`
        return value.name
    return str(value)


def run_name(optimizer: str, values: dict[str, Any], trial: int | None = None) -> str:
    """The optimizer, then each value that tells the run apart (`lbfgs κ=1e4`, `adam lr=6.8e-3 bs=16
    #4`), by key: a group's choice bare, any other value as `short key=3 significant digits`."""
    words = [optimizer]
    for key, value in values.items():
        if key in GROUPS:
            words += [] if key == "optimizer" else [str(value)]
        elif key != "seed":
            words.append(f"{SHORT_KEYS.get(key, key.rsplit('.', 1)[-1])}={short_value(key, value)}")
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
