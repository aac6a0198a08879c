-- Prefect uses the database `prefect` (POSTGRES_DB); MLflow gets its own.
CREATE DATABASE mlflow;
