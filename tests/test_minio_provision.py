"""MinIO provisioning: one user per owner and one for the coordinator, root keys to nobody, failures loud.

No MinIO server or `mc` installs here, so `mc` is a stand-in script that records its arguments and
answers as the real one does on a rerun ("already attached") or on an error; the bucket is
created on a real S3 server (moto) with the root keys.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from fgrpo_app.processes import StackError
from fgrpo_app.s3_access import owner_policy, provision_minio
from fgrpo_core.config import ExperimentConfig, parse_config
from tests.conftest import tiny_config

ROOT = ("minio-root", "minio-root-secret")
# Records each call; `attach` answers like mc when $MC_ATTACH_ANSWER says so.
_FAKE_MC = """#!/bin/sh
echo "$@" >> "$MC_LOG"
if [ "$3" = "attach" ] && [ -n "$MC_ATTACH_ANSWER" ]; then echo "$MC_ATTACH_ANSWER" >&2; exit 1; fi
exit 0
"""


def _setup(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> ExperimentConfig:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mc").write_text(_FAKE_MC)
    (bin_dir / "mc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("MC_LOG", str(tmp_path / "mc.log"))
    monkeypatch.delenv("MC_ATTACH_ANSWER", raising=False)
    store = {"kind": "s3", "bucket": "hospital-data", "prefix": "fl"}
    return parse_config(tiny_config(model_cache, tmp_path, name="trial-7", store=store))


def _calls(tmp_path: Path) -> list[list[str]]:
    return [shlex.split(line) for line in (tmp_path / "mc.log").read_text().splitlines()]


def test_every_owner_and_the_coordinator_get_their_own_scoped_user(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    # Prepare
    cfg = _setup(tmp_path, model_cache, monkeypatch)
    # Execute
    keys = provision_minio(s3_endpoint, cfg, ROOT, tmp_path / "stack")
    # Assert: nobody got the root keys; each user is created, given its policy and attached.
    owners = [c.id for c in cfg.clients]
    assert set(keys) == {"coordinator", *owners}
    assert all(key != ROOT and key[1] != ROOT[1] for key in keys.values())
    calls = _calls(tmp_path)
    assert calls[0] == ["alias", "set", "stack", s3_endpoint, *ROOT]
    for user, (name, secret) in keys.items():
        assert name == ("coordinator" if user == "coordinator" else f"owner-{user}")
        assert ["admin", "user", "add", "stack", name, secret] in calls
        assert ["admin", "policy", "attach", "stack", name, "--user", name] in calls
    # Assert: the policies are for this config's bucket, prefix and experiment, not fgrpo/demo.
    policy_dir = tmp_path / "stack" / "credentials" / "policies"
    for owner in owners:
        written = json.loads((policy_dir / f"owner-{owner}.json").read_text())
        assert written == owner_policy("hospital-data", "fl", "trial-7", owner)
        assert "arn:aws:s3:::hospital-data/fl/trial-7/clients/" in json.dumps(written)
    coordinator = json.loads((policy_dir / "coordinator.json").read_text())
    assert coordinator["Statement"][0]["Resource"] == [
        "arn:aws:s3:::hospital-data",
        "arn:aws:s3:::hospital-data/*",
    ]


def test_an_attach_that_fails_stops_the_stack_unless_already_attached(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    # Prepare
    cfg = _setup(tmp_path, model_cache, monkeypatch)
    # Execute / Assert: a rerun on the same data (the policy is attached already) goes on.
    monkeypatch.setenv("MC_ATTACH_ANSWER", "mc: <ERROR> policy owner-a is already attached to owner-a")
    assert len(provision_minio(s3_endpoint, cfg, ROOT, tmp_path / "stack")) == 1 + len(cfg.clients)
    # Execute / Assert: any other failure is an error naming mc's answer (not `|| true`).
    monkeypatch.setenv("MC_ATTACH_ANSWER", "mc: <ERROR> Unable to attach policy: access denied")
    with pytest.raises(StackError, match=r"`mc admin policy attach …` failed: .*access denied"):
        provision_minio(s3_endpoint, cfg, ROOT, tmp_path / "stack")


def test_without_mc_provisioning_refuses_rather_than_share_root(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    # Prepare
    cfg = _setup(tmp_path, model_cache, monkeypatch)
    (tmp_path / "bin" / "mc").unlink()
    # Execute / Assert
    with pytest.raises(StackError, match="no `mc` on PATH"):
        provision_minio(s3_endpoint, cfg, ROOT, tmp_path / "stack")
