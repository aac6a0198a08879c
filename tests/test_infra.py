"""The deployment files agree with the code: owners, pools, policies, deployments, secrets.

No Docker engine runs here, so docker-compose.yml is checked as data: every owner of the demo
has its worker on its own pool with its own S3 user, images are pinned by digest, and no secret
is written in the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from fgrpo_app.s3_access import owner_policy
from fgrpo_core.config import load_config
from flows.distributed import CLIENT_FLOW_NAME, work_pool_name

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
DEMO = load_config(REPO / "configs" / "demo.yaml")
OWNERS = [c.id for c in DEMO.clients]


def _yaml(name: str) -> Any:
    # prefect.yaml and compose use YAML anchors and merge keys; safe_load resolves both.
    return yaml.safe_load((INFRA / name).read_text())


def test_each_owner_policy_is_the_one_the_stack_provisions() -> None:
    # Execute / Assert: the committed MinIO policies are exactly what `fgrpo stack up` gives moto.
    for owner in OWNERS:
        committed = json.loads((INFRA / "policies" / f"owner-{owner}.json").read_text())
        assert committed == owner_policy(DEMO.store.bucket, DEMO.store.prefix, DEMO.name, owner)


def test_compose_has_one_scoped_worker_per_owner_and_no_literal_secrets() -> None:
    # Prepare
    compose = _yaml("docker-compose.yml")
    services = compose["services"]
    text = (INFRA / "docker-compose.yml").read_text()
    # Assert: a CPU and a GPU worker per owner, on its own pool, with its own S3 user.
    for owner in OWNERS:
        for name in (f"worker-{owner}", f"worker-{owner}-gpu"):
            worker = services[name]
            assert worker["command"][-4:] == ["--pool", work_pool_name(owner), "--type", "process"]
            env = worker["environment"]
            assert env["FGRPO_CLIENT_ID"] == owner
            assert env["AWS_ACCESS_KEY_ID"] == f"owner-{owner}"
            assert env["AWS_SECRET_ACCESS_KEY"].startswith("${")
        assert "deploy" in services[f"worker-{owner}-gpu"]
    # Assert: third-party images pinned by digest; secrets only through ${...} from .env.
    for name, service in services.items():
        image = service.get("image", "")
        if image and not image.startswith("fgrpo:"):
            assert re.search(r"@sha256:[0-9a-f]{64}$", image), name
    assert not re.search(r"^\s*[A-Z_]*(PASSWORD|SECRET)[A-Z_]*:\s*(?!\$\{)\S", text, re.MULTILINE)
    example = (INFRA / ".env.example").read_text()
    for var in set(re.findall(r"\$\{([A-Z_]+)(?::[?-][^}]*)?\}", text)) - {"PREFECT_UI_API_URL", "FGRPO_BUCKET"}:
        assert f"{var}=" in example, var


def test_prefect_yaml_deploys_each_owner_and_a_scheduled_experiment() -> None:
    # Prepare
    deployments = {d["name"]: d for d in _yaml("prefect.yaml")["deployments"]}
    # Assert: the client flow on every owner's pool, with the device from job variables.
    for owner in OWNERS:
        dep = deployments[owner]
        assert dep["entrypoint"] == "flows/owner.py:client_round"
        assert dep["work_pool"]["name"] == work_pool_name(owner)
        assert dep["work_pool"]["job_variables"]["env"]["FGRPO_DEVICE"] in {"cpu", "cuda"}
    experiment = deployments[DEMO.name]
    assert experiment["entrypoint"] == "flows/experiment.py:run_experiment"
    assert experiment["schedules"][0]["cron"]
    # The entrypoints exist and carry the flow names the coordinator starts.
    assert f'@flow(name="{CLIENT_FLOW_NAME}"' in (REPO / "flows" / "owner.py").read_text()
