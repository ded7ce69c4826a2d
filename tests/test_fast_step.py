"""src/loop/fast_step.py: torch.optim's SGD and Adam update, bitwise, without Optimizer.step's overhead.

The reference is torch.optim itself, stepped on an identical copy of the parameters."""

from __future__ import annotations

import subprocess
import sys
import warnings
from typing import Any

import pytest
import torch

from src.loop.fast_step import fast_step

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


def test_the_first_step_is_fast_too_and_a_scheduler_sees_it() -> None:
    """No fallback to optimizer.step for the state's creation, and no warning from the scheduler
    that it stepped before the optimizer (torch's own wrapper of `step` is bypassed)."""
    optimizer = torch.optim.Adam(params(torch.float32), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    for p in optimizer.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast_step(optimizer)()
        scheduler.step()
    assert [float(s["step"]) for s in optimizer.state.values()] == [1.0, 1.0, 1.0]


def test_a_run_never_imports_dynamo_and_resumes_from_its_state() -> None:
    """skip_compile_guards: build, fit, snapshot and restore a run without importing
    torch._dynamo, in a fresh interpreter (this one may have imported it already)."""
    script = """
import sys
from src.train import build, compose
from src.loop import fit
from src.loop import checkpoint
cfg = compose("tracking=none", "optimizer=adam", "trainer.max_epochs=3", "trainer.progress=false",
              "trainer.checkpoint_every=1")
run = build(cfg)
snapshots = []
fit(run, snapshot=lambda p: snapshots.append(checkpoint.capture(p, run, None, "")))
state = snapshots[-1]
again = build(cfg)
checkpoint.restore(state, again)
assert again.optimizer.state_dict()["state"][0]["step"] == run.optimizer.state_dict()["state"][0]["step"]
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
