"""Object store: the same contract for a local folder and a real S3 server over HTTP (moto)."""

# The S3 fixtures are imported below, so test parameters named like them read as redefinitions;
# drop this line (and the import) once tests/conftest.py imports the fixtures.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest

from fgrpo_core.config import StoreSettings
from fgrpo_io.s3_store import S3Store, s3_client
from fgrpo_io.store import (
    LocalStore,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectStore,
    StoreAccessDeniedError,
    StoreError,
    StoreUnavailableError,
    get_json,
    make_store,
    put_json,
)
from tests.s3_server import (  # noqa: F401
    S3Env,
    create_owner_credentials,
    s3_auth_enforced,
    s3_endpoint,
    s3_env,
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    env: S3Env = request.getfixturevalue("s3_env")
    return S3Store(env.bucket, endpoint_url=env.endpoint_url, region=env.region)


def _free_port() -> int:
    """A port that nothing listens on: bound once by the OS, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_put_get_round_trip(store: ObjectStore) -> None:
    # Prepare
    key = "p/exp/clients/alice/round-0000/delta.safetensors"
    data = bytes(range(256)) * 4
    # Execute
    store.put_bytes(key, data)
    # Assert
    assert store.get_bytes(key) == data
    assert store.exists(key)
    assert not store.exists("p/exp/clients/alice/round-0001/delta.safetensors")


def test_no_overwrite_keeps_original(store: ObjectStore) -> None:
    # Prepare
    key = "p/exp/state/round-0000.json"
    store.put_bytes(key, b"first")
    # Execute / Assert: a second write is refused and the first bytes survive.
    with pytest.raises(ObjectExistsError, match="already exists"):
        store.put_bytes(key, b"second")
    assert store.get_bytes(key) == b"first"


def test_overwrite_replaces(store: ObjectStore) -> None:
    # Prepare
    key = "p/exp/state/round-0000.json"
    store.put_bytes(key, b"first")
    # Execute
    store.put_bytes(key, b"second", overwrite=True)
    # Assert
    assert store.get_bytes(key) == b"second"


def test_list_keys_by_prefix_sorted(store: ObjectStore) -> None:
    # Prepare: written out of order, with a sibling prefix that shares the first characters.
    keys = [
        "p/exp/state/round-0002.json",
        "p/exp/state/round-0000.json",
        "p/exp/global/round-0000/adapter.safetensors",
        "p/exp/state/round-0001.json",
        "p/exp2/state/round-0000.json",
    ]
    for key in keys:
        store.put_bytes(key, key.encode())
    # Execute
    state = store.list_keys("p/exp/state/")
    everything = store.list_keys("p/exp")
    # Assert
    assert state == [
        "p/exp/state/round-0000.json",
        "p/exp/state/round-0001.json",
        "p/exp/state/round-0002.json",
    ]
    assert everything == sorted(keys)
    assert store.list_keys("p/none/") == []


def test_missing_key_raises_not_found(store: ObjectStore) -> None:
    # Execute / Assert
    with pytest.raises(ObjectNotFoundError, match="round-0009"):
        store.get_bytes("p/exp/global/round-0009/adapter.safetensors")


def test_json_helpers_round_trip(store: ObjectStore) -> None:
    # Prepare
    doc = {"round": 3, "clients": ["a", "b"], "weights": [0.25, 0.75]}
    # Execute
    put_json(store, "p/exp/state/round-0003.json", doc)
    # Assert
    assert get_json(store, "p/exp/state/round-0003.json") == doc


def test_not_json_is_a_store_error(store: ObjectStore) -> None:
    # Prepare
    store.put_bytes("p/x.json", b"\xff not json")
    # Execute / Assert
    with pytest.raises(StoreError, match="not valid JSON"):
        get_json(store, "p/x.json")


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", "a//b", "", "a/./b", "a\\b"])
def test_bad_keys_rejected(store: ObjectStore, key: str) -> None:
    # Execute / Assert: nothing may leave the store root (or read as such a path in S3).
    with pytest.raises(StoreError, match="invalid store key"):
        store.put_bytes(key, b"x")
    with pytest.raises(StoreError, match="invalid store key"):
        store.get_bytes(key)


def test_large_object_round_trip(store: ObjectStore) -> None:
    # Prepare: 12 MB of non-repeating bytes.
    data = b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(12 * 2**20 // 32))
    # Execute
    store.put_bytes("p/big.bin", data)
    back = store.get_bytes("p/big.bin")
    # Assert
    assert len(back) == 12 * 2**20
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()


def test_local_store_leaves_no_temp_files(tmp_path: Path) -> None:
    # Prepare
    store = LocalStore(tmp_path)
    store.put_bytes("a/b.bin", b"1")
    # Execute: a refused write and an overwrite.
    with pytest.raises(ObjectExistsError):
        store.put_bytes("a/b.bin", b"2")
    store.put_bytes("a/b.bin", b"3", overwrite=True)
    # Assert: only the object itself is on disk.
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.bin"]
    assert store.uri("a/b.bin") == (tmp_path / "a" / "b.bin").resolve().as_uri()


def test_local_store_rejects_symlink_escape(tmp_path: Path) -> None:
    # Prepare: a folder inside the root that links outside it.
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(outside)
    store = LocalStore(tmp_path / "root")
    # Execute / Assert
    with pytest.raises(StoreError, match="outside the store root"):
        store.put_bytes("link/x.bin", b"x")
    assert list(outside.iterdir()) == []


def test_s3_closed_port_is_unavailable_quickly(s3_env: S3Env) -> None:
    # Prepare: a port nobody listens on, one attempt, short timeouts.
    endpoint = f"http://127.0.0.1:{_free_port()}"
    client = s3_client(endpoint, s3_env.region, connect_timeout=1, read_timeout=1, max_attempts=1)
    store = S3Store("fgrpo-unreachable", client=client)
    started = time.perf_counter()
    # Execute
    with pytest.raises(StoreUnavailableError) as caught:
        store.get_bytes("p/x.bin")
    # Assert: the message names the endpoint and says what to check.
    assert time.perf_counter() - started < 5.0
    assert endpoint in str(caught.value)
    assert "FGRPO_S3_ENDPOINT_URL" in str(caught.value)


def test_s3_missing_bucket_names_it(s3_env: S3Env) -> None:
    # Prepare
    store = S3Store("fgrpo-no-such-bucket", endpoint_url=s3_env.endpoint_url)
    # Execute / Assert
    with pytest.raises(StoreError, match="bucket 'fgrpo-no-such-bucket' does not exist"):
        store.put_bytes("p/x.bin", b"x")


def test_s3_ensure_bucket_creates_once(s3_env: S3Env) -> None:
    # Prepare
    store = S3Store(f"{s3_env.bucket}-new", endpoint_url=s3_env.endpoint_url)
    # Execute: twice, the second call finds it.
    store.ensure_bucket()
    store.ensure_bucket()
    # Assert
    store.put_bytes("p/x.bin", b"x")
    assert store.list_keys("p/") == ["p/x.bin"]


def test_s3_owner_policy_denies_other_prefixes(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: SPEC §7 policy: alice writes only clients/alice/ and reads global/.
    arn = f"arn:aws:s3:::{s3_env.bucket}/p/exp"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject"],
                "Resource": [f"{arn}/clients/alice/*"],
            },
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"{arn}/global/*"]},
        ],
    }
    admin = S3Store(s3_env.bucket, endpoint_url=s3_env.endpoint_url)
    admin.put_bytes("p/exp/global/round-0000/adapter.safetensors", b"theta0")
    key_id, secret = create_owner_credentials(s3_env.endpoint_url, f"alice-{s3_env.bucket}", policy)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with s3_auth_enforced(s3_env.endpoint_url):
        alice = S3Store(s3_env.bucket, endpoint_url=s3_env.endpoint_url)
        # Execute
        alice.put_bytes("p/exp/clients/alice/round-0000/delta.safetensors", b"delta")
        theta0 = alice.get_bytes("p/exp/global/round-0000/adapter.safetensors")
        # Assert: another owner's prefix and the global folder are closed to her writes.
        with pytest.raises(StoreAccessDeniedError, match="clients/bob/"):
            alice.put_bytes("p/exp/clients/bob/round-0000/delta.safetensors", b"forged")
        with pytest.raises(StoreAccessDeniedError, match="own clients/<client>/ prefix"):
            alice.put_bytes("p/exp/global/round-0001/adapter.safetensors", b"forged")
    assert theta0 == b"theta0"
    assert admin.get_bytes("p/exp/clients/alice/round-0000/delta.safetensors") == b"delta"
    assert admin.list_keys("p/exp/clients/bob/") == []


def test_make_store_local_relative_to_base_dir(tmp_path: Path) -> None:
    # Prepare
    settings = StoreSettings(kind="local", root="runs/store")
    # Execute
    store = make_store(settings, base_dir=tmp_path)
    # Assert
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "runs" / "store").resolve()


def test_make_store_s3_endpoint_from_environment(s3_env: S3Env) -> None:
    # Prepare: the YAML endpoint is wrong; FGRPO_S3_ENDPOINT_URL (set by s3_env) wins.
    settings = StoreSettings(kind="s3", bucket=s3_env.bucket, endpoint_url="http://127.0.0.1:9")
    # Execute
    store = make_store(settings)
    store.put_bytes("p/x.bin", b"x")
    # Assert
    assert isinstance(store, S3Store)
    assert store.endpoint_url == s3_env.endpoint_url
    assert store.get_bytes("p/x.bin") == b"x"
    assert store.uri("p/x.bin") == f"s3://{s3_env.bucket}/p/x.bin"


def test_make_store_s3_endpoint_from_settings(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: without the environment variable the configured endpoint is used.
    monkeypatch.delenv("FGRPO_S3_ENDPOINT_URL")
    settings = StoreSettings(kind="s3", bucket=s3_env.bucket, endpoint_url=s3_env.endpoint_url)
    # Execute
    store = make_store(settings)
    # Assert
    assert isinstance(store, S3Store)
    assert store.endpoint_url == s3_env.endpoint_url
    assert store.list_keys("") == []
