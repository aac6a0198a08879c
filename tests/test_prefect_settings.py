"""The Prefect settings the project runs its flows with: no task caching, the ephemeral API's."""

from __future__ import annotations

import importlib
import pkgutil
import ssl
from pathlib import Path
from typing import Any

import certifi
from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_URL,
    PREFECT_CLIENT_CSRF_SUPPORT_ENABLED,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_SERVER_CSRF_PROTECTION_ENABLED,
    get_current_settings,
    temporary_settings,
)

import tasks
from fgrpo_io import prefect_settings


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


def _batches() -> tuple[int, int]:
    services = get_current_settings().server.services
    return services.task_run_recorder.batch_size, services.event_persister.batch_size


def test_ephemeral_api_settings_and_a_real_servers_untouched() -> None:
    # Prepare
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        # Execute
        with prefect_settings.flow_settings():
            ephemeral = (
                PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value(),
                PREFECT_CLIENT_CSRF_SUPPORT_ENABLED.value(),
                _batches(),
            )
        with (
            temporary_settings(updates={PREFECT_SERVER_CSRF_PROTECTION_ENABLED: True}),
            prefect_settings.flow_settings(),
        ):
            protected = PREFECT_CLIENT_CSRF_SUPPORT_ENABLED.value()
    with (
        temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}),
        prefect_settings.flow_settings(),
    ):
        real = (
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value(),
            PREFECT_CLIENT_CSRF_SUPPORT_ENABLED.value(),
            _batches(),
        )
    # Assert: no heartbeats, no CSRF round trip against the ephemeral API (which checks none), its
    # recorder and persister writing in batches; a server that checks tokens, or a real server,
    # keeps Prefect's defaults.
    assert ephemeral == (None, False, (prefect_settings.RECORDER_BATCH, prefect_settings.PERSISTER_BATCH))
    assert protected is True
    assert real[0] is not None and real[1] is True and real[2] == (1, 20)


def test_ephemeral_clients_get_one_root_of_certifi_and_a_real_servers_ca_file_stays(tmp_path: Path) -> None:
    # Prepare
    own = tmp_path / "own-ca.pem"
    own.write_text(Path(certifi.where()).read_text())
    with temporary_settings(
        updates={PREFECT_API_SSL_CERT_FILE: str(own)}, restore_defaults={PREFECT_API_URL}
    ):
        # Execute
        with prefect_settings.flow_settings():
            ephemeral = Path(str(PREFECT_API_SSL_CERT_FILE.value()))
            roots = ssl.create_default_context(cafile=str(ephemeral)).cert_store_stats()["x509_ca"]
            text = ephemeral.read_text()
        after = (ephemeral.exists(), PREFECT_API_SSL_CERT_FILE.value())
        with (
            temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}),
            prefect_settings.flow_settings(),
        ):
            real = PREFECT_API_SSL_CERT_FILE.value()
    # Assert: one root, certifi's; gone after the block, the CA file set before back in place; a
    # real server's clients keep it.
    assert roots == 1 and text.strip() in Path(certifi.where()).read_text()
    assert after == (False, str(own))
    assert real == str(own)
