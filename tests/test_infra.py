"""The deployment files agree with the code: owners, pools, policies, deployments, secrets, ports.

No Docker engine runs here, so docker-compose.yml is checked as data: every owner of the demo
has its worker on its own pinned pool with its own S3 user, images are pinned by digest, no
secret is written in the file, the Prefect API needs its auth string, and ports are published
on 127.0.0.1 unless the operator opts in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from fgrpo_app.infra_files import TEMPLATE_FILE, write_infra_files
from fgrpo_core.config import load_config
from flows.owner_sessions import CLIENT_FLOW_NAME, work_pool_name

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
DEMO = load_config(REPO / "configs" / "demo.yaml")
OWNERS = [c.id for c in DEMO.clients]


def _yaml(name: str) -> Any:
    # prefect.yaml and compose use YAML anchors and merge keys; safe_load resolves both.
    return yaml.safe_load((INFRA / name).read_text())


def test_the_generated_infra_files_are_the_committed_ones(tmp_path: Path) -> None:
    # Execute: what `python -m fgrpo_app.infra_files --config configs/demo.yaml` writes.
    written = write_infra_files(DEMO, tmp_path)
    # Assert: the same files, byte for byte: policies for the demo's own bucket, prefix and
    # experiment (the functions `fgrpo stack up` provisions with), and the pinned pool template.
    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    committed = [*(f"policies/{p.name}" for p in (INFRA / "policies").iterdir()), TEMPLATE_FILE]
    assert (
        names == sorted(committed) == sorted([*(f"policies/owner-{o}.json" for o in OWNERS), TEMPLATE_FILE])
    )
    for path in written:
        assert path.read_text() == (INFRA / path.relative_to(tmp_path)).read_text(), path.name
    policy = json.loads((INFRA / "policies" / f"owner-{OWNERS[0]}.json").read_text())
    resources = json.dumps(policy["Statement"])
    assert (
        f"arn:aws:s3:::{DEMO.store.bucket}/{DEMO.store.prefix}/{DEMO.name}/clients/{OWNERS[0]}/" in resources
    )
    template = json.loads((INFRA / TEMPLATE_FILE).read_text())
    assert template["variables"]["additionalProperties"] is False
    assert not {"command", "env", "working_dir"} & (
        set(template["variables"]["properties"]) | set(template["job_configuration"])
    )


def test_compose_binds_loopback_and_needs_the_prefect_auth_string() -> None:
    # Prepare
    services = _yaml("docker-compose.yml")["services"]
    text = (INFRA / "docker-compose.yml").read_text()
    # Assert: every published port listens on FGRPO_BIND, 127.0.0.1 by default.
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(p.startswith("${FGRPO_BIND:-127.0.0.1}:") for p in published), published
    # Assert: the server requires the auth string; every Prefect client sends it; no API key.
    auth = "${PREFECT_AUTH_STRING:?set in .env}"
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"] == auth
    clients = [n for n, s in services.items() if "PREFECT_API_URL" in s.get("environment", {})]
    assert len(clients) == 2 * len(OWNERS) + 1  # the workers and pools-init
    assert all(services[n]["environment"]["PREFECT_API_AUTH_STRING"] == auth for n in clients)
    assert "PREFECT_API_KEY" not in text
    # Assert: pools come from the pinned template before any worker; no failure is swallowed.
    pools = services["pools-init"]
    assert "--base-job-template /infra/work-pool-template.json" in pools["command"][0]
    assert f"for owner in {' '.join(OWNERS)}; do" in pools["command"][0]
    assert f"for owner in {' '.join(OWNERS)}; do" in services["minio-init"]["command"][0]
    for owner in OWNERS:
        assert (
            services[f"worker-{owner}"]["depends_on"]["pools-init"]["condition"]
            == "service_completed_successfully"
        )
        assert services[f"worker-{owner}"]["environment"]["FGRPO_DEVICE"] == "cpu"
        assert services[f"worker-{owner}-gpu"]["environment"]["FGRPO_DEVICE"] == "cuda"
    assert "|| true" not in text


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
    assert not re.search(r"^\s*[A-Z_]*(PASSWORD|SECRET|AUTH_STRING)[A-Z_]*:\s*(?!\$\{)\S", text, re.MULTILINE)
    example = (INFRA / ".env.example").read_text()
    for var in set(re.findall(r"\$\{([A-Z_]+)(?::[?-][^}]*)?\}", text)) - {
        "PREFECT_UI_API_URL",
        "FGRPO_BUCKET",
    }:
        assert f"{var}=" in example, var


def test_prefect_yaml_deploys_each_owner_and_a_scheduled_experiment() -> None:
    # Prepare
    deployments = {d["name"]: d for d in _yaml("prefect.yaml")["deployments"]}
    # Assert: the client flow on every owner's pool, with no job variables (its pool refuses them).
    for owner in OWNERS:
        dep = deployments[owner]
        assert dep["entrypoint"] == "flows/owner.py:owner_rounds"
        assert dep["work_pool"] == {"name": work_pool_name(owner)}
    experiment = deployments[DEMO.name]
    assert experiment["entrypoint"] == "flows/experiment.py:run_experiment"
    assert experiment["schedules"][0]["cron"]
    # The entrypoints exist and carry the flow names the coordinator starts.
    assert f'@flow(name="{CLIENT_FLOW_NAME}"' in (REPO / "flows" / "owner.py").read_text()
