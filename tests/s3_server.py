"""A real S3-compatible HTTP server on 127.0.0.1 for tests (moto's threaded server), no boto3 mocks.

Import the fixtures where they are needed (or once in tests/conftest.py):

    from tests.s3_server import s3_endpoint, s3_env  # noqa: F401

`s3_endpoint` (session) starts the server on a free port of 127.0.0.1 and stops it at the end.
`s3_env` (function) points the environment at it with test credentials and creates a fresh bucket.
`s3_auth_enforced` turns on moto's IAM checks for a block, to test per-owner policies.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from fgrpo_io.s3_store import s3_client

TEST_REGION = "us-east-1"
_bucket_numbers = itertools.count()


@dataclass(frozen=True)
class S3Env:
    """What a test needs to talk to the server: endpoint, region and its own empty bucket."""

    endpoint_url: str
    region: str
    bucket: str


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server listening on 127.0.0.1 only; stopped at session end."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def point_aws_env_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Test credentials, TEST_REGION and FGRPO_S3_ENDPOINT_URL=endpoint in the environment."""
    # Nothing from the developer's own AWS set-up may leak into a test.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    monkeypatch.setenv("FGRPO_S3_ENDPOINT_URL", endpoint)


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> S3Env:
    """Test credentials and FGRPO_S3_ENDPOINT_URL in the environment, plus a fresh bucket."""
    point_aws_env_at(monkeypatch, s3_endpoint)
    bucket = f"fgrpo-test-{next(_bucket_numbers):04d}"
    s3_client(s3_endpoint, TEST_REGION).create_bucket(Bucket=bucket)
    return S3Env(endpoint_url=s3_endpoint, region=TEST_REGION, bucket=bucket)


def _set_no_auth_action_count(endpoint: str, count: str) -> None:
    # text/plain: a form content type would make the server parse the body away.
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=count.encode(),
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        json.load(response)


@contextlib.contextmanager
def s3_auth_enforced(endpoint: str) -> Iterator[None]:
    """Inside the block moto checks every request's credentials and IAM policies."""
    _set_no_auth_action_count(endpoint, "0")
    try:
        yield
    finally:
        _set_no_auth_action_count(endpoint, "inf")


def create_owner_credentials(endpoint: str, user: str, policy: Mapping[str, Any]) -> tuple[str, str]:
    """An IAM user with an inline policy (call before enforcing auth); returns its key pair."""
    iam = boto3.session.Session().client("iam", endpoint_url=endpoint, region_name=TEST_REGION)
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName=f"{user}-policy", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]
