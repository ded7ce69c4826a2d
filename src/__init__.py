"""descentlab: the optimization lecture's methods as a Hydra-configured, MLflow-tracked experiment kit."""
