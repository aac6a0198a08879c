"""The I/O layer: the object store and its keys, delta exchange, MLflow tracking and registry,
timings and the process-local model runtime. Imports only fgrpo_core (a test checks the layers)."""
