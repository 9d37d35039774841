"""MLflow as the system of record: runs, parameters, metrics, artifacts."""
