"""descentlab's Optuna sweeper for Hydra: `python -m src.train --multirun hydra/sweeper=optuna` (a
successor to hydra-optuna-sweeper, reading its configs) or `hydra/sweeper=descentlab_optuna` (the
same, with Hydra's exclusive `range` stop).

Jobs find their trial with `current_trial()`.
"""

from ._trial import current_trial, reports

__all__ = ["current_trial", "reports"]
