"""S3 access of the local stack: the bucket, and one set of credentials per data owner.

Each owner may write only under its own `clients/<owner>/` prefix and read `global/`
(`owner_policy`); the coordinator may do everything in the bucket. moto enforces the policies
through its IAM emulation, MinIO through `mc admin policy` (`mc` is required: nobody but this
module ever holds MinIO's root keys). The policies are generated for the config's own bucket,
prefix and experiment (`write_policies`; `python -m fgrpo_app.infra_files` writes infra/'s).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fgrpo_app.processes import StackError
from fgrpo_core.config import ExperimentConfig
from fgrpo_io import layout


def owner_policy(bucket: str, prefix: str, experiment: str, owner: str) -> dict[str, Any]:
    """IAM policy of one data owner: write only under its clients/<owner>/ prefix, read global/."""
    own = layout.client_prefix(prefix, experiment, owner)
    glob = layout.global_prefix(prefix, experiment)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadGlobal",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/{glob}*"],
            },
            {
                "Sid": "WriteOwnPrefix",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/{own}*"],
            },
            # Listing its own and the global prefix lets a HEAD on a missing key answer 404
            # (not 403) on AWS and MinIO.
            {
                "Sid": "ListOwnAndGlobal",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
                "Condition": {"StringLike": {"s3:prefix": [f"{own}*", f"{glob}*"]}},
            },
        ],
    }


def coordinator_policy(bucket: str) -> dict[str, Any]:
    """The coordinator reads every delta and writes global adapters and state."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:*"],
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }


def boto_client(service: str, endpoint: str, region: str, key: tuple[str, str]) -> Any:
    import boto3
    import botocore.config

    session = boto3.session.Session(aws_access_key_id=key[0], aws_secret_access_key=key[1])
    config = botocore.config.Config(s3={"addressing_style": "path"})
    return session.client(service, endpoint_url=endpoint, region_name=region, config=config)  # type: ignore[call-overload]


def provision_moto(endpoint: str, cfg: ExperimentConfig) -> dict[str, tuple[str, str]]:
    """Bucket, one IAM user per owner plus the coordinator, then moto enforces the policies."""
    boot = ("stack-bootstrap", "stack-bootstrap")  # accepted while moto does not check auth
    s3 = boto_client("s3", endpoint, cfg.store.region, boot)
    if cfg.store.bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=cfg.store.bucket)
    iam = boto_client("iam", endpoint, cfg.store.region, boot)
    users = {"coordinator": coordinator_policy(cfg.store.bucket)}
    for spec in cfg.clients:
        users[spec.id] = owner_policy(cfg.store.bucket, cfg.store.prefix, cfg.name, spec.id)
    keys: dict[str, tuple[str, str]] = {}
    for user, policy in users.items():
        iam.create_user(UserName=f"fgrpo-{user}")
        iam.put_user_policy(UserName=f"fgrpo-{user}", PolicyName="fgrpo", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=f"fgrpo-{user}")["AccessKey"]
        keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
    # From now on every request needs a key above and is checked against its policy.
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5):
        pass
    return keys


def owner_policies(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """`owner-<id>` -> that owner's policy, for the config's actual bucket, prefix and experiment."""
    return {
        f"owner-{spec.id}": owner_policy(cfg.store.bucket, cfg.store.prefix, cfg.name, spec.id)
        for spec in cfg.clients
    }


def write_policies(cfg: ExperimentConfig, out_dir: Path) -> list[Path]:
    """One JSON file per owner policy (`infra/policies/` is this for configs/demo.yaml)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, policy in owner_policies(cfg).items():
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(policy, indent=2) + "\n")
        paths.append(path)
    return paths


def provision_minio(
    endpoint: str, cfg: ExperimentConfig, root: tuple[str, str], stack_dir: Path
) -> dict[str, tuple[str, str]]:
    """Bucket, one MinIO user per owner and one for the coordinator: root keys stay here."""
    mc = shutil.which("mc")
    if mc is None:
        # Without `mc` the only keys would be root's: no owner ever gets them.
        raise StackError("no `mc` on PATH: cannot create MinIO users; install `mc` or use moto")
    s3 = boto_client("s3", endpoint, cfg.store.region, root)
    if cfg.store.bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=cfg.store.bucket)
    env = {**os.environ, "MC_CONFIG_DIR": str(stack_dir / "mc")}

    def run(*args: str) -> None:
        done = subprocess.run([mc, *args], env=env, capture_output=True, text=True)
        # A second `up` on the same data finds the policy attached: the one failure that is fine.
        if done.returncode != 0 and not (args[2] == "attach" and "already" in done.stderr.lower()):
            raise StackError(
                f"`mc {' '.join(args[:3])} …` failed: {done.stderr.strip() or done.stdout.strip()}"
            )

    run("alias", "set", "stack", endpoint, *root)
    policy_dir = stack_dir / "credentials" / "policies"
    write_policies(cfg, policy_dir)
    (policy_dir / "coordinator.json").write_text(json.dumps(coordinator_policy(cfg.store.bucket)))
    # key of `keys` -> MinIO user and policy name (the policy file is <name>.json).
    users = {"coordinator": "coordinator", **{spec.id: f"owner-{spec.id}" for spec in cfg.clients}}
    keys: dict[str, tuple[str, str]] = {}
    for user, name in users.items():
        policy_file = policy_dir / f"{name}.json"
        keys[user] = (name, secrets.token_urlsafe(24))
        run("admin", "policy", "create", "stack", name, str(policy_file))
        run("admin", "user", "add", "stack", *keys[user])
        run("admin", "policy", "attach", "stack", name, "--user", name)
    return keys
