"""src/fast_step.py: torch.optim's SGD and Adam update, bitwise, without Optimizer.step's overhead.

The reference is torch.optim itself, stepped on an identical copy of the parameters."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from src.fast_step import fast_step

CASES: list[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = [
    (torch.optim.SGD, {"lr": 0.1}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (torch.optim.Adam, {"lr": 1e-3}),
    (torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    (torch.optim.AdamW, {"lr": 0.01}),
]


def params(dtype: torch.dtype) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(1)
    return [torch.nn.Parameter(torch.randn(shape, generator=g, dtype=dtype)) for shape in [(3,), (2, 4), ()]]


def train(make: Any, dtype: torch.dtype, fast: bool, steps: int = 40) -> tuple[list[torch.Tensor], dict]:
    """`steps` steps on fixed pseudo-random gradients, the learning rate decaying every step."""
    ps = params(dtype)
    optimizer = make(ps)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.97)
    step = fast_step(optimizer) if fast else optimizer.step
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g, dtype=dtype)
        step()
        scheduler.step()
    return [p.detach() for p in ps], optimizer.state_dict()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("cls", "options"), CASES)
def test_bitwise_the_same_as_torch(cls: Any, options: dict[str, Any], dtype: torch.dtype) -> None:
    def make(ps: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return cls(ps, **options)

    (ours, our_state), (theirs, their_state) = train(make, dtype, True), train(make, dtype, False)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    for key in their_state["state"]:  # the same state, in the same format: snapshots stay readable
        for name, value in their_state["state"][key].items():
            assert torch.equal(our_state["state"][key][name], value), name
    assert our_state["param_groups"] == their_state["param_groups"]


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.Adam(ps, amsgrad=True),
        lambda ps: torch.optim.Adam(ps, foreach=True),
        lambda ps: torch.optim.SGD(ps, lr=0.1, maximize=True),
        lambda ps: torch.optim.RMSprop(ps),
    ],
)
def test_other_optimizers_and_options_keep_torch_step(make: Any) -> None:
    optimizer = make(params(torch.float32))
    assert fast_step(optimizer) == optimizer.step


def test_a_step_hook_keeps_torch_step() -> None:
    optimizer = torch.optim.SGD(params(torch.float32), lr=0.1)
    calls: list[int] = []
    optimizer.register_step_post_hook(lambda *_: calls.append(1))
    fast_step(optimizer)()
    assert calls == [1]
