"""Prefect tasks: one side effect each, calling into fgrpo_core."""
