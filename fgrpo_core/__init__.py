"""fgrpo_core: the pure FGRPO algorithm library (no Prefect, boto3 or MLflow)."""

__version__ = "0.1.0"
