"""The servers of the local stack: Prefect (basic auth), MLflow and S3 (MinIO with `mc`, else moto).

Every secret is generated here: the Prefect API's auth string, MinIO's root keys and, through
`fgrpo_app.s3_access`, one S3 key pair per owner and one for the coordinator. Owners never get
root keys: MinIO without `mc` (which would leave only root) is refused.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from fgrpo_app.processes import HOST, Component, StackError, free_port, spawn, wait_http
from fgrpo_app.s3_access import provision_minio, provision_moto
from fgrpo_core.config import ExperimentConfig
from fgrpo_io.environment import child_env
from fgrpo_io.store import ENDPOINT_ENV

# Inherited variables a component must not see: the operator's credentials and endpoints
# (a PREFECT_API_KEY would also take precedence over the auth string and fail with 401).
_PRIVATE_PREFIXES = ("AWS_", "PREFECT_", "MLFLOW_", "FGRPO_")
AUTH_USER = "fgrpo"


@dataclass
class Servers:
    """What `up` hands on from the servers: public endpoints, and the secrets kept apart."""

    env: dict[str, str]  # endpoints only: printed by the CLI and stored in stack.json
    auth_string: str  # Prefect basic auth "user:password": only in the 0600 env files
    keys: dict[str, tuple[str, str]]  # S3 key pair per owner id and "coordinator"


def base_env() -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}
    env = child_env(inherited)
    # Nothing from the operator's own AWS set-up may reach a component.
    env.update(
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def write_env_file(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    os.chmod(path, 0o600)  # secrets: readable by this user only
    path.write_text("".join(f"export {k}={v}\n" for k, v in values.items()))


def s3_backend() -> str | None:
    """The `minio` binary to run, or None for moto; MinIO without `mc` is refused."""
    minio = shutil.which("minio")
    if minio is not None and shutil.which("mc") is None:
        raise StackError(
            f"found `minio` ({minio}) but no `mc` on PATH: without `mc` the stack cannot create one "
            "MinIO user per owner and would have to hand every owner the root keys. Install `mc` "
            "(MinIO client), or take `minio` off PATH to use the moto S3 server"
        )
    return minio


def start_servers(cfg: ExperimentConfig, stack_dir: Path, started: list[Component]) -> Servers:
    """Prefect, MLflow and S3 servers, started together and then awaited."""
    minio = s3_backend()
    base = base_env()
    p_port, m_port, s_port = free_port(), free_port(), free_port()
    auth_string = f"{AUTH_USER}:{secrets.token_urlsafe(24)}"
    prefect = spawn(
        "prefect-server",
        [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(p_port)],
        {**base, "PREFECT_HOME": str(stack_dir / "prefect"), "PREFECT_SERVER_API_AUTH_STRING": auth_string},
        stack_dir,
        f"http://{HOST}:{p_port}",
    )
    started.append(prefect)
    mlflow_dir = stack_dir / "mlflow"
    (mlflow_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    mlflow_cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri"]
    mlflow_cmd += [
        f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        "--artifacts-destination",
        str(mlflow_dir / "artifacts"),
    ]
    mlflow_cmd += ["--host", HOST, "--port", str(m_port), "--workers", "1"]
    mlflow = spawn(
        "mlflow-server",
        mlflow_cmd,
        {**base, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stack_dir,
        f"http://{HOST}:{m_port}",
    )
    started.append(mlflow)
    s3_url = f"http://{HOST}:{s_port}"
    root = ("fgrpo-root", secrets.token_urlsafe(24))
    if minio is not None:
        minio_cmd = [minio, "server", str(stack_dir / "minio"), "--address", f"{HOST}:{s_port}"]
        minio_cmd += ["--console-address", f"{HOST}:{free_port()}"]
        minio_env = {**base, "MINIO_ROOT_USER": root[0], "MINIO_ROOT_PASSWORD": root[1]}
        s3 = spawn("s3-server", minio_cmd, minio_env, stack_dir, s3_url)
    else:
        moto_cmd = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(s_port)]
        s3 = spawn("s3-server", moto_cmd, base, stack_dir, s3_url)
    started.append(s3)
    wait_http(s3, f"{s3_url}/minio/health/live" if minio else f"{s3_url}/moto-api/")
    keys = provision_minio(s3_url, cfg, root, stack_dir) if minio else provision_moto(s3_url, cfg)
    wait_http(mlflow, f"{mlflow.url}/health")
    wait_http(prefect, f"{prefect.url}/api/health")  # the health route needs no auth
    env = {"PREFECT_API_URL": f"{prefect.url}/api", "MLFLOW_TRACKING_URI": mlflow.url, ENDPOINT_ENV: s3_url}
    return Servers(env=env, auth_string=auth_string, keys=keys)
