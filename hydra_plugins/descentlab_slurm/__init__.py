"""descentlab's SLURM launcher: `hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml)."""
