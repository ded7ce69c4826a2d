"""descentlab's batching launcher: `hydra/launcher=batched` (conf/hydra/launcher/batched.yaml)."""
