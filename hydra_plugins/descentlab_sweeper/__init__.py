"""descentlab's Optuna sweeper for Hydra: `python -m src.train --multirun hydra/sweeper=descentlab_optuna`.

Jobs find their trial with `current_trial()`.
"""

from ._trial import current_trial, reports

__all__ = ["current_trial", "reports"]
