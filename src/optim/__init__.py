"""The lecture's methods torch lacks, as torch.optim.Optimizer subclasses.

Like torch.optim.LBFGS they treat all parameters as one vector θ (one parameter group), and like
every torch optimizer they read the step size η_t from `param_groups[0]["lr"]`, so torch's
learning-rate schedulers drive them unchanged.

Both need the Hessian of the batch loss, so their `step(closure)` calls `closure(backward=False)`:
the batch loss with its autograd graph, for them to differentiate twice (see `src.loop.fit`).
"""

from src.optim.newton import Newton
from src.optim.preconditioned import Preconditioned

__all__ = ["Newton", "Preconditioned"]
