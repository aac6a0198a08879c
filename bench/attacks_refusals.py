"""Issue 11's attacks 5-7: each is refused before any round runs, so no weight and no evaluation change.

Each row records the refusal's message as this script gets it from the real check, except the
Prefect API's 401, which needs a running server: that message is the one measured by
``tests/test_stack_access.py`` on a real Prefect 3.9.1 server, quoted (``measured_by`` says so).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fgrpo_core.config import ExperimentConfig, parse_config

HERE = "bench/attacks_refusals.py (this run)"


def refusal(attack: str, variant: str, injected: str, reason: str, measured_by: str = HERE) -> dict[str, Any]:
    return {
        "attack": attack,
        "variant": variant,
        "injected": injected,
        "attacker_weight": None,
        "reason": reason,
        "round": "refused before any round runs",
        "macro_accuracy_change": 0.0,  # nothing was committed: the head is theta_0, as in the honest run
        "normalised_reward_change": 0.0,
        "next_round": "—",
        "measured_by": measured_by,
    }


def _message(action: Callable[[], object]) -> str:
    """The message of the typed error ``action`` raises; a check that lets it through says so."""
    try:
        action()
    except Exception as err:  # typed errors, and jsonschema's ValidationError: recorded as they are
        return f"{type(err).__name__}: {err}"
    return "NOT REFUSED"


@contextlib.contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def command_the_owners(work: Path) -> list[dict[str, Any]]:
    """5. The API without credentials, a flow run's command/env override, any config path."""
    import jsonschema

    from fgrpo_app.stack_owners import pinned_job_template
    from flows.owner import OWNER_CONFIG_DIR_ENV, OWNER_CONFIG_ENV, config_path

    schema = pinned_job_template()["variables"]
    override = {"command": "sh -c 'cat ~/.aws/credentials'", "env": {"PATH": "/tmp"}}
    folder = work / "owner-configs"
    folder.mkdir(parents=True, exist_ok=True)
    with _environ(**{OWNER_CONFIG_ENV: str(folder / "experiment.yaml"), OWNER_CONFIG_DIR_ENV: None}):
        escaped = _message(lambda: config_path("/etc/hostname"))
    return [
        refusal(
            "5",
            "api-auth",
            "POST /api/flow_runs/filter without the auth string",
            '401 {"exception_message":"Unauthorized"}',
            "tests/test_stack_access.py::test_the_api_answers_only_with_the_auth_string (real Prefect "
            "3.9.1 server with basic auth; quoted, not re-run here)",
        ),
        refusal(
            "5",
            "job-template",
            f"a flow run's job_variables {sorted(override)} against the owner pool's pinned template "
            "(the schema Prefect validates job variables with)",
            _message(lambda: jsonschema.validate(override, schema)).splitlines()[0],
            HERE
            + "; the server's 422 is tests/test_stack_access.py::test_every_owner_pool_pins_command_and_env",
        ),
        refusal("5", "config-path", "flow parameter experiment_config='/etc/hostname'", escaped),
    ]


def _config(raw: dict[str, Any], name: str, **sections: dict[str, Any]) -> ExperimentConfig:
    merged = {**raw, "name": name, **{k: {**raw.get(k, {}), **v} for k, v in sections.items()}}
    return parse_config(merged)


def mix_experiments(raw: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """6. Resume with another config; a second coordinator while the first holds the lease."""
    from fgrpo_io import lease
    from fgrpo_io.exchange import identity
    from fgrpo_io.pin import pin_or_check
    from fgrpo_io.store import LocalStore

    store = LocalStore(work / "store")
    first = _config(raw, "pinned")
    pin_or_check(store, first)
    changed = _config(raw, "pinned", aggregation={"strategy": "fedavg"}, grpo={"learning_rate": 5e-3})
    resumed = _message(lambda: pin_or_check(store, changed))
    held = lease.take(store, identity(first), ttl_s=600.0)
    try:
        second = _message(lambda: lease.take(store, identity(first), ttl_s=600.0))
    finally:
        lease.release(store, identity(first), held)
    return [
        refusal("6", "config-pin", "resume with strategy fedavg and learning_rate 5e-3", resumed),
        refusal("6", "lease", "a second coordinator while the first holds the lease", second),
    ]


def loose_bounds(raw: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """7. Non-finite and absurd config values, an escaping prefix, MinIO without `mc`."""
    from fgrpo_app.stack_servers import s3_backend

    def bad(section: str, change: dict[str, Any]) -> str:
        return _message(lambda: _config(raw, str(raw["name"]), **{section: change})).splitlines()[-1].strip()

    bin_dir = work / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    minio = bin_dir / "minio"  # a stand-in binary: only its presence on PATH matters here
    minio.write_text("#!/bin/sh\nexit 0\n")
    minio.chmod(minio.stat().st_mode | stat.S_IXUSR)
    with _environ(PATH=str(bin_dir)):
        no_mc = _message(s3_backend)
    return [
        refusal("7", "lr-inf", "grpo.learning_rate: .inf", bad("grpo", {"learning_rate": float("inf")})),
        refusal(
            "7",
            "gain-clip-inf",
            "aggregation.gain_clip: .inf",
            bad("aggregation", {"gain_clip": float("inf")}),
        ),
        refusal("7", "rounds-1e9", "federation.rounds: 10**9", bad("federation", {"rounds": 10**9})),
        refusal("7", "prefix", "store.prefix: ../../..", bad("store", {"prefix": "../../.."})),
        refusal("7", "minio-without-mc", "`minio` on PATH, no `mc` (owners would get root keys)", no_mc),
    ]


def run_all(raw: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """Every refusal, from the base config ``raw`` (no model is loaded)."""
    return [*command_the_owners(work), *mix_experiments(raw, work), *loose_bounds(raw, work)]
