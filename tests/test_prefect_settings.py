"""The Prefect settings the project runs its flows with: no task caching, the ephemeral API's."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_CLIENT_CSRF_SUPPORT_ENABLED,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_SERVER_CSRF_PROTECTION_ENABLED,
    temporary_settings,
)

import tasks
from fgrpo_io import runtime


def _project_tasks() -> dict[str, Task[Any, Any]]:
    found: dict[str, Task[Any, Any]] = {}
    for info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{info.name}")
        found |= {f"{info.name}.{n}": v for n, v in vars(module).items() if isinstance(v, Task)}
    return found


def test_no_project_task_hashes_its_inputs_for_a_cache() -> None:
    # Prepare: the environment defaults are applied before the tasks are imported (conftest)
    found = _project_tasks()
    # Execute
    cached = sorted(name for name, t in found.items() if t.cache_policy is not NO_CACHE)
    # Assert
    assert len(found) >= 15 and cached == []


def test_ephemeral_api_settings_and_a_real_servers_untouched() -> None:
    # Prepare
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        # Execute
        with runtime.flow_settings():
            ephemeral = (
                PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value(),
                PREFECT_CLIENT_CSRF_SUPPORT_ENABLED.value(),
            )
        with (
            temporary_settings(updates={PREFECT_SERVER_CSRF_PROTECTION_ENABLED: True}),
            runtime.flow_settings(),
        ):
            protected = PREFECT_CLIENT_CSRF_SUPPORT_ENABLED.value()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}), runtime.flow_settings():
        real = (PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value(), PREFECT_CLIENT_CSRF_SUPPORT_ENABLED.value())
    # Assert: no heartbeats and no CSRF round trip against the ephemeral API (which checks none);
    # a server that checks tokens, or a real server, keeps Prefect's defaults.
    assert ephemeral == (None, False)
    assert protected is True
    assert real[0] is not None and real[1] is True
