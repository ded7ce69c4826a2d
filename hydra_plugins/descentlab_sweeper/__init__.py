"""descentlab's Optuna sweeper for Hydra: `python -m src.train --multirun hydra/sweeper=optuna` (a
successor to hydra-optuna-sweeper, reading its configs) or `hydra/sweeper=descentlab_optuna` (the
same, with Hydra's exclusive `range` stop).

It uses small public pieces of the app (src.sweep.trial: how a job finds its trial;
src.sweep.objectives: what a sweep optimizes; src.sweep.parent: the sweep's parent run, which it
hands its study to; src.sweep.studies, src.repeats' statistics of repeats, src.tracking,
src.signals); the app never imports it: they meet through Hydra (the sweeper's overrides and
`hydra.job.env_set`, the job's return value, Hydra's callbacks).
"""
