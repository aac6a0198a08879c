"""Who may command the stack's owners: Prefect basic auth, pinned job templates, no root S3 keys.

A real `fgrpo stack` (Prefect server with basic auth, moto S3 with IAM, one worker per owner);
no round is trained here (tests/test_distributed.py trains two through the same stack).
"""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from fgrpo_app import stack
from fgrpo_app.processes import StackError
from fgrpo_app.stack_owners import pinned_job_template
from fgrpo_core.config import parse_config
from flows.owner_sessions import deployment_name, work_pool_name
from tests.conftest import tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OWNERS = ("owner-a", "owner-b")
# Seconds the control waits for owner-b's worker to get its pool's new template (pushed, ~0.1 s).
CONTROL_SNAPSHOT_WAIT_S = 3.0


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines())
    return {k: v for k, v in pairs}


@pytest.fixture(scope="module")
def access(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[dict[str, Any]]:
    """`stack.up` with 2 owners (no training); `down` at the end in any case."""
    out = tmp_path_factory.mktemp("access")
    store = {"kind": "s3", "bucket": "fgrpo-acc", "prefix": "fgrpo"}
    raw = tiny_config(model_cache, out, store=store, grpo={"device": "cpu"})
    raw["clients"] = [c for c in raw["clients"] if c["id"] in OWNERS]
    (out / "owner").mkdir()
    config_path = out / "owner" / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    cfg = parse_config(raw)
    stack_dir = out / "stack"
    state = stack.up(cfg, config_path, stack_dir)
    try:
        yield {
            "cfg": cfg,
            "out": out,
            "stack_dir": stack_dir,
            "state": state,
            "api_url": state["env"]["PREFECT_API_URL"],
            "auth": _env_file(stack_dir / "coordinator.env")["PREFECT_API_AUTH_STRING"],
        }
    finally:
        stack.down(stack_dir)


def _request(url: str, auth: str | None, body: dict[str, Any] | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers=headers, method="GET" if body is None else "POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _client_settings(access: dict[str, Any]) -> Any:
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    return temporary_settings(
        updates={PREFECT_API_URL: access["api_url"], PREFECT_API_AUTH_STRING: access["auth"]}
    )


def _session_params(experiment: str) -> dict[str, Any]:
    """An owner run's parameters but the owner: one round of a made-up owner session."""
    return {"experiment": experiment, "session": "0123456789abcdef", "first_round": 1, "last_round": 1}


def test_the_api_answers_only_with_the_auth_string(access: dict[str, Any]) -> None:
    # Prepare
    api = access["api_url"]
    query = f"{api}/flow_runs/filter"
    # Execute
    anonymous = _request(query, None, {})
    wrong = _request(query, "fgrpo:guessed", {})
    create = _request(f"{api}/work_pools/", None, {"name": "evil", "type": "process"})
    right = _request(query, access["auth"], {})
    health = _request(f"{api}/health", None)
    # Assert: without the secret nothing is read or created; the health probe stays open.
    assert anonymous[0] == wrong[0] == create[0] == 401
    assert "Unauthorized" in anonymous[1]
    assert right[0] == 200 and health[0] == 200


def test_the_auth_string_is_only_in_private_files_and_the_processes(access: dict[str, Any]) -> None:
    # Prepare
    stack_dir: Path = access["stack_dir"]
    auth = access["auth"]
    # Assert: 0600 env file for the coordinator; nothing public holds the secret.
    assert stat.S_IMODE((stack_dir / "coordinator.env").stat().st_mode) == 0o600
    assert auth not in (stack_dir / "stack.json").read_text()
    assert auth not in json.dumps(access["state"]["env"])
    # Assert: server and workers got it under Prefect's names; nobody got an API key.
    for comp in stack.components(access["state"]):
        env = psutil.Process(comp.pid).environ()
        assert "PREFECT_API_KEY" not in env, comp.name
        if comp.name == "prefect-server":
            assert env["PREFECT_SERVER_API_AUTH_STRING"] == auth
        elif comp.name.startswith("worker-"):
            assert env["PREFECT_API_AUTH_STRING"] == auth


def _ws_outcome(url: str, protocols: list[str] | None, token: str | None) -> str | int:
    """ "open" once authenticated, the close code when closed, "http <status>" when refused outright."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect(url, subprotocols=protocols, open_timeout=10) as conn:  # type: ignore[arg-type]
            conn.send(json.dumps({"type": "auth", "token": token}))
            if url.endswith("/out"):
                conn.send(json.dumps({"type": "filter", "filter": {}}))
            conn.recv(timeout=1.5)
            return "open"
    except InvalidStatus as err:
        return f"http {err.response.status_code}"
    except TimeoutError:
        return "open"  # authenticated; no event to send yet
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else "closed"


def test_websocket_events_need_the_auth_string(access: dict[str, Any]) -> None:
    # Prepare: Prefect's event streams in (events can trigger automations) and out (every run's events).
    ws = access["api_url"].replace("http://", "ws://")
    cases = {
        "legacy": (None, None),  # the pre-3.x protocol: no subprotocol, no auth message
        "no-token": (["prefect"], None),
        "wrong": (["prefect"], "fgrpo:guessed"),
        "right": (["prefect"], access["auth"]),
    }
    # Execute
    got = {
        (path, case): _ws_outcome(f"{ws}/{path}", *args)
        for path in ("events/in", "events/out")
        for case, args in cases.items()
    }
    # Assert: refused (HTTP 403) or closed with a policy violation (1008) unless the token is right.
    for path in ("events/in", "events/out"):
        assert got[(path, "legacy")] == "http 403", got
        assert got[(path, "no-token")] == got[(path, "wrong")] == 1008, got
        assert got[(path, "right")] == "open", got


def test_every_owner_pool_pins_command_and_env(access: dict[str, Any]) -> None:
    # Prepare
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    cfg = access["cfg"]

    async def probe() -> dict[str, Any]:
        async with get_client() as client:
            pools = {o: await client.read_work_pool(work_pool_name(o)) for o in OWNERS}
            deployment = await client.read_deployment_by_name(deployment_name("owner-a"))
            refused = {}
            for name, value in (
                ("command", f"touch {access['out']}/pwned"),
                ("env", {"AWS_ACCESS_KEY_ID": "x"}),
            ):
                try:
                    await client.create_flow_run_from_deployment(
                        deployment.id,
                        parameters={"client_id": "owner-a", **_session_params(cfg.name)},
                        job_variables={name: value},
                    )
                    refused[name] = "created"
                except PrefectHTTPStatusError as err:
                    refused[name] = f"{err.response.status_code} {err.response.text}"
            return {"pools": pools, "refused": refused}

    # Execute
    with _client_settings(access):
        got = asyncio.run(probe())
    # Assert: the template the server holds is the pinned one; the device is in the worker's env.
    for pool in got["pools"].values():
        assert pool.base_job_template == pinned_job_template()
        assert not {"command", "env", "working_dir"} & set(pool.base_job_template["job_configuration"])
    for comp in stack.components(access["state"]):
        if comp.name.startswith("worker-"):
            assert psutil.Process(comp.pid).environ()["FGRPO_DEVICE"] == cfg.grpo.device == "cpu"
    # Assert: a flow run asking for another command or env is refused with the server's reason.
    assert set(got["refused"]) == {"command", "env"}
    for name, answer in got["refused"].items():
        assert answer.startswith("422 "), answer
        assert "Additional properties are not allowed" in answer and f"'{name}'" in answer, answer


def test_smuggled_job_variables_have_no_effect_and_the_run_fails_with_its_reason(
    access: dict[str, Any],
) -> None:
    # Prepare: two routes Prefect 3.9 does not check against the pool's schema: PATCH of a
    # deployment's job variables (an `env` that would widen the owner's config folder to /) and
    # POST /flow_runs/ (a `command`). Only the pinned template stops them. Control: owner-b's
    # pool switched to Prefect's default template gets the same attack.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.workers.process import ProcessWorker

    cfg = access["cfg"]
    markers = {o: access["out"] / f"pwned-{o}" for o in OWNERS}
    params = {**_session_params(cfg.name), "experiment_config": "../../../../../../../../etc/hostname"}

    async def attack(client: Any, owner: str) -> tuple[tuple[int, int], str]:
        deployment = await client.read_deployment_by_name(deployment_name(owner))
        widen = {"job_variables": {"env": {"FGRPO_OWNER_CONFIG_DIR": "/"}}}
        patched = await client._client.patch(f"/deployments/{deployment.id}", json=widen)
        body = {
            "flow_id": str(deployment.flow_id),
            "deployment_id": str(deployment.id),
            "work_pool_name": work_pool_name(owner),
            "parameters": {**params, "client_id": owner},
            "job_variables": {"command": f"touch {markers[owner]}"},
            "state": {"type": "SCHEDULED"},
        }
        created = await client._client.post("/flow_runs/", json=body)
        return (patched.status_code, created.status_code), created.json()["id"]

    async def smuggle() -> dict[str, Any]:
        async with get_client() as client:
            default = ProcessWorker.get_default_base_job_template()
            await client.update_work_pool(
                work_pool_name("owner-b"), WorkPoolUpdate(base_job_template=default)
            )
            # A run the worker picks up before the pushed snapshot arrives runs the pinned template.
            await asyncio.sleep(CONTROL_SNAPSHOT_WAIT_S)
            sent = {o: await attack(client, o) for o in OWNERS}
            started = time.monotonic()
            deadline, seen, runs = started + 180, {}, {}
            while time.monotonic() < deadline and not (seen and runs["owner-a"].state.is_final()):
                runs = {o: await client.read_flow_run(run_id) for o, (_, run_id) in sent.items()}
                if markers["owner-b"].exists() and not seen:
                    seen["control"] = time.monotonic() - started
                await asyncio.sleep(0.5)
            # Put the stack back: pinned template, deployments without job variables.
            template = pinned_job_template()
            await client.update_work_pool(
                work_pool_name("owner-b"), WorkPoolUpdate(base_job_template=template)
            )
            for owner in OWNERS:
                deployment = await client.read_deployment_by_name(deployment_name(owner))
                await client._client.patch(f"/deployments/{deployment.id}", json={"job_variables": {}})
            return {"sent": sent, "runs": runs, "seen": seen}

    # Execute
    with _client_settings(access):
        got = asyncio.run(smuggle())
    # Assert: Prefect accepted both smuggled routes (the limit this test guards against).
    assert [codes for codes, _ in got["sent"].values()] == [(204, 201), (204, 201)]
    # Assert: the control ran the attacker's command; the pinned pool ran Prefect's own engine
    # with the owner's own env, and the owner's flow refused the path outside its config folder.
    assert markers["owner-b"].exists() and "control" in got["seen"]
    assert not markers["owner-a"].exists()
    state = got["runs"]["owner-a"].state
    assert state.is_failed(), state
    assert "outside this owner's config folder" in (state.message or ""), state.message


def test_minio_without_mc_is_refused_before_anything_starts(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a `minio` binary on PATH, no `mc`.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "minio").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "minio").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    cfg = parse_config(tiny_config(model_cache, tmp_path, store={"kind": "s3", "bucket": "fgrpo-x"}))
    # Execute / Assert: a clear refusal, no downgrade to shared root keys, nothing started.
    with pytest.raises(StackError, match=r"no `mc` on PATH.*root keys"):
        stack.up(cfg, tmp_path / "cfg.yaml", tmp_path / "stack")
    assert not (tmp_path / "stack").exists()
