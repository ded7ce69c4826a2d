"""`Training`: everything one training run needs, built from a config by `src.train.build`.

It is the contract between `build`, the loop (`src.loop.fit`), snapshots (`src.loop.checkpoint`) and
`src.evaluate`: typed, so mypy checks every use. Frozen: the parts are replaced by building again,
while their state (parameters, optimizer moments, RNG) changes as training goes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from src.config import Sampling, TrainerConf
from src.config.schemas import Interval
from src.data import Data
from src.estimation.reference import Reference
from src.signals import StopRequest


class Model(Protocol):
    """What the loop needs of a model: an nn.Module that owns its loss (optionally .coefficients())."""

    def loss(self, X: Tensor, y: Tensor) -> Tensor: ...
    def parameters(self) -> Iterator[nn.Parameter]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...
    def eval(self) -> Any: ...


@dataclass(frozen=True)
class Training:
    model: nn.Module  # one of src/models.py: it owns its loss (the loop reads it as a `Model`)
    optimizer: Optimizer
    scheduler: LRScheduler
    interval: Interval  # whether the scheduler steps after each optimizer step or each epoch
    data: Data
    reference: Reference | None  # the exact minimizer of the training objective, where there is one
    trainer: TrainerConf
    generator: torch.Generator  # every random draw of the run (batches, initial values)
    l2: float = 0.0  # α of the penalty (α/2)‖θ‖² in the training objective
    stop: StopRequest = field(default_factory=StopRequest)  # this run's: signals record into it

    @property
    def learner(self) -> Model:
        """The model as the loop uses it: a module that owns its loss, as every src/models.py one does
        (nn.Module's own typing cannot say so)."""
        return cast(Model, self.model)

    @property
    def batch_size(self) -> int:
        """Rows per step: the trainer's batch size, or the whole training split."""
        n = len(self.data.train)
        return n if self.trainer.batch_size is None else min(self.trainer.batch_size, n)

    @property
    def stochastic(self) -> bool:
        """Whether a step sees a random sample of the rows (minibatch SGD, or draws with replacement)
        rather than the whole training split: only then is there gradient noise for η_t to damp."""
        full = self.batch_size >= len(self.data.train)
        return not full or self.trainer.sampling is Sampling.replacement
