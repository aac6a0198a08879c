"""fgrpo: the CLI, the object store and the tracking helpers (I/O outside Prefect tasks)."""
