"""torch.optim's SGD and Adam (AdamW) step without its per-call machinery, for the loop's hot path.

`Optimizer.step` spends ≈ 80 µs (SGD) to 180 µs (Adam) of Python per call on hooks, the profiler
label, grad-mode and dynamo guards and list building; on a 2-parameter model that is most of a
step. `fast_step(optimizer)` returns a function doing exactly torch's CPU single-tensor update
(`_single_tensor_sgd`, `_single_tensor_adam`: the same operations in the same order, so results
are bitwise the same) on the optimizer's own param groups and state, so schedulers, snapshots and
resume see a torch.optim optimizer as before. Anything else (other optimizers, options with
another code path, hooks, non-CPU tensors) gets `optimizer.step` itself.

`skip_compile_guards()` spares a process that never calls torch.compile the import of torch._dynamo
(≈1.8 s and ≈70 MB) that torch.optim's methods otherwise trigger on first use.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import optimizer as torch_optimizer

from src.models import scalar

Step = Callable[[], object]


def _sgd(opt: torch.optim.SGD) -> None:
    for group in opt.param_groups:
        lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if wd != 0:
                grad = grad.add(p, alpha=wd)
            if momentum != 0:
                state = opt.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.detach().clone()
                else:
                    buf.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
                grad = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
            p.detach().add_(grad, alpha=-lr)  # detached: in place on a leaf, outside no_grad


def _new_adam_state(p: Tensor) -> dict[str, Tensor]:
    """What torch's `Adam._init_group` creates on a parameter's first step (CPU, neither fused nor
    capturable): a step counter in the default float dtype on the CPU, and two zero moments."""
    step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return {
        "step": torch.tensor(0.0, dtype=step_dtype),
        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
    }


def _adam(opt: torch.optim.Adam) -> None:
    for group in opt.param_groups:
        lr, (beta1, beta2), wd, eps = group["lr"], group["betas"], group["weight_decay"], group["eps"]
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            state = opt.state[p]
            if not state:
                state.update(_new_adam_state(p))
            step_t, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
            step_t += 1
            p = p.detach()  # in place on a leaf, without a no_grad block (its cost shows here)
            if wd != 0:
                if group["decoupled_weight_decay"]:
                    p.mul_(1 - lr * wd)
                else:
                    grad = grad.add(p, alpha=wd)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(scalar(beta2, p)).addcmul_(grad, grad, value=1 - beta2)
            step = step_t.item()
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(scalar(eps, p))
            p.addcdiv_(exp_avg, denom, value=-(lr / (1 - beta1**step)))


UPDATES: dict[type, Callable[..., None]] = {
    torch.optim.SGD: _sgd,
    torch.optim.Adam: _adam,
    torch.optim.AdamW: _adam,  # Adam with decoupled_weight_decay=True
}


def _hooked(opt: torch.optim.Optimizer) -> bool:
    """Whether a step hook is registered (asked every step: one may come after the loop started)."""
    return bool(
        opt._optimizer_step_pre_hooks
        or opt._optimizer_step_post_hooks
        or torch_optimizer._global_optimizer_pre_hooks
        or torch_optimizer._global_optimizer_post_hooks
    )


def _plain(opt: torch.optim.Optimizer) -> bool:
    """Whether torch would take its single-tensor path with float hyperparameters."""
    for group in opt.param_groups:
        flags = ("foreach", "fused", "differentiable", "maximize", "amsgrad", "capturable")
        if any(group.get(flag) for flag in flags):
            return False
        numbers = [group["lr"], *group.get("betas", ())]
        if not all(isinstance(x, float | int) for x in numbers):
            return False
        for p in group["params"]:
            if p.device.type != "cpu" or p.is_complex() or p.is_sparse:
                return False
    return True


def fast_step(optimizer: torch.optim.Optimizer) -> Step:
    """`optimizer.step`, or a faster equivalent."""
    update = UPDATES.get(type(optimizer))
    if update is None or not _plain(optimizer):
        return optimizer.step

    def step() -> None:
        if _hooked(optimizer):
            optimizer.step()
            return
        update(optimizer)
        # What a scheduler's wrapper of `optimizer.step` records: the optimizer has stepped (else
        # the scheduler's first step warns that it came first).
        optimizer._opt_called = True  # type: ignore[attr-defined]

    return step


COMPILE_GUARDED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def skip_compile_guards() -> None:
    """torch.optim marks these Optimizer methods `torch._disable_dynamo` (do not trace them under
    torch.compile); that wrapper imports torch._dynamo on first call, then caches the disabled
    function on the method as `__dynamo_disable`. Without torch.compile, disabling tracing changes
    nothing: caching each method as its own disabled version skips the import. A process that has
    imported torch._dynamo already (it may compile) keeps torch's behaviour."""
    if "torch._dynamo" in sys.modules:
        return
    for name in COMPILE_GUARDED:
        method = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if method is not None and not hasattr(method, "__dynamo_disable"):
            method.__dynamo_disable = method
