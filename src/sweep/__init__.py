"""Search over hyper-parameters: a trial's side of Optuna (`trial`), studies and their storages
(`studies`), search spaces (`spaces`) and a --multirun's parent MLflow run (`parent`)."""
