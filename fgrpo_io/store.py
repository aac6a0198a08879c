"""The object store: a local folder or an S3-compatible bucket behind one small interface.

Writes are idempotent (SPEC §5): `put_bytes` refuses to replace an existing object unless told
to, so a retried or replayed upload is detected instead of silently replacing a delta.
Credentials never come from configuration: boto3 reads them from the environment (or its
default chain); `FGRPO_S3_ENDPOINT_URL` overrides the configured endpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session
from pydantic import BaseModel

from fgrpo_core.config import StoreSettings
from fgrpo_core.errors import FgrpoError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ENDPOINT_ENV = "FGRPO_S3_ENDPOINT_URL"
# Parsing botocore's S3 service model costs ~0.1-0.3 s per client; the loader caches it.
_SERVICE_MODEL_LOADER = botocore.loaders.create_loader()


class StoreError(FgrpoError):
    """The object store cannot do what was asked; the message says what to fix."""


class ObjectExistsError(StoreError):
    """An object is already stored under this key and overwriting was not requested."""


class ObjectNotFoundError(StoreError):
    """No object is stored under this key."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached (server down, wrong endpoint, timeout)."""


class ObjectTooLargeError(StoreError):
    """An object is larger than the reader allows; nothing beyond the limit was read."""


class StoreAccessDeniedError(StoreError):
    """The credentials in the environment may not do this on this key."""


class ObjectStore(Protocol):
    """What the rest of fgrpo needs from a store. Keys are "/"-separated relative paths."""

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        """Store `data`; raise ObjectExistsError if the key exists and `overwrite` is False."""
        ...

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        """Return the object's bytes; raise ObjectNotFoundError if there is none.

        With ``max_bytes``, an object larger than that raises ObjectTooLargeError after reading
        at most ``max_bytes + 1`` bytes (an upload that lies about its size costs nothing).
        """
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Sorted keys that start with `prefix` (a plain string prefix)."""
        ...

    def uri(self, key: str) -> str:
        """A URI naming the object, for logs and reports."""
        ...


def check_key(key: str) -> str:
    """Reject keys that are empty, absolute, or have empty, "." or ".."-like segments."""
    segments = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(s == "" or s.startswith(".") for s in segments):
        raise StoreError(
            f"invalid store key {key!r}: use a relative '/'-separated path whose segments are "
            f"non-empty and do not start with '.' (no '..', no absolute paths)"
        )
    return key


def put_json(store: ObjectStore, key: str, obj: Any, overwrite: bool = False) -> None:
    """Store a JSON document (a pydantic model or plain JSON data), sorted keys, indented."""
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    text = json.dumps(data, sort_keys=True, indent=2, allow_nan=False)
    store.put_bytes(key, text.encode("utf-8"), overwrite=overwrite)


def get_json(store: ObjectStore, key: str) -> Any:
    """Load a JSON document; StoreError if the object is not valid JSON."""
    raw = store.get_bytes(key)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"{store.uri(key)} is not valid JSON ({err}); it was not written by fgrpo") from err


class LocalStore:
    """Objects as files under `root`; writes go to a temp file first, so no partial object exists."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):  # e.g. a symlink inside the root pointing out
            raise StoreError(f"store key {key!r} resolves outside the store root {self.root}")
        return path

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temp name starts with "." so that it can never be a valid key nor be listed.
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if overwrite:
                os.replace(tmp_name, path)
            else:
                # link() fails if the target exists: an atomic "create only if absent".
                try:
                    os.link(tmp_name, path)
                except FileExistsError:
                    raise ObjectExistsError(
                        f"{self.uri(key)} already exists; objects are written once "
                        f"(a retry or a replay of an earlier upload?)"
                    ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with path.open("rb") as f:
                data = f.read() if max_bytes is None else f.read(max_bytes + 1)
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(f"no object {self.uri(key)}") from None
        return _within(data, max_bytes, self.uri(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        # Walk only the folder part of the prefix; the rest is matched as a string prefix.
        folder = self.root / prefix.rpartition("/")[0]
        if not folder.is_dir() or not folder.resolve().is_relative_to(self.root):
            return []
        keys = (p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not _is_temp(k))

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()


def _within(data: bytes, max_bytes: int | None, uri: str) -> bytes:
    if max_bytes is not None and len(data) > max_bytes:
        raise ObjectTooLargeError(f"{uri} is larger than the {max_bytes} bytes allowed; it was not read")
    return data


def _is_temp(key: str) -> bool:
    return any(segment.startswith(".") for segment in key.split("/"))


def s3_client(
    endpoint_url: str | None,
    region: str,
    *,
    connect_timeout: float = 5,
    read_timeout: float = 60,
    max_attempts: int = 3,
) -> S3Client:
    """A path-style S3 client; credentials from the environment / boto3's default chain only."""
    config = botocore.config.Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    # A fresh session resolves credentials from the environment now (not cached from earlier);
    # only the parsed service model is shared.
    core_session = botocore.session.get_session()
    core_session.register_component("data_loader", _SERVICE_MODEL_LOADER)
    session = boto3.session.Session(botocore_session=core_session)
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
# 409 ConditionalRequestConflict: another conditional write to the same key is in flight.
_EXISTS = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


class S3Store:
    """Objects in an S3-compatible bucket (AWS S3, MinIO, moto)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        client: S3Client | None = None,
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.client = client if client is not None else s3_client(endpoint_url, region)
        self.endpoint_url = self.client.meta.endpoint_url

    @contextlib.contextmanager
    def _errors(self, key: str | None) -> Iterator[None]:
        """Translate botocore errors into the store's typed errors."""
        where = self.uri(key) if key is not None else f"s3://{self.bucket}"
        try:
            yield
        except botocore.exceptions.ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            raise self._client_error(code, where, err) from err
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as err:
            raise StoreUnavailableError(
                f"cannot reach the S3 endpoint {self.endpoint_url} ({err}); check that the server "
                f"is up and that {ENDPOINT_ENV} (or store.endpoint_url) points at it"
            ) from err
        except botocore.exceptions.NoCredentialsError as err:
            raise StoreAccessDeniedError(
                f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from err

    def _client_error(self, code: str, where: str, err: Exception) -> StoreError:
        if code in _EXISTS:
            return ObjectExistsError(
                f"{where} already exists; objects are written once (a retry or a replay?)"
            )
        if code in _NOT_FOUND:
            return ObjectNotFoundError(f"no object {where}")
        if code == "NoSuchBucket":
            return StoreError(
                f"bucket {self.bucket!r} does not exist at {self.endpoint_url}; create it "
                f"(fgrpo stack up, or S3Store.ensure_bucket) or fix store.bucket"
            )
        if code in _DENIED:
            return StoreAccessDeniedError(
                f"access denied to {where}: a data owner's credentials may only write under its "
                f"own clients/<client>/ prefix and read global/; check the key and the credentials"
            )
        if code in _BAD_CREDENTIALS:
            return StoreAccessDeniedError(
                f"S3 rejected the credentials for {where} ({code}); check AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY in the environment"
            )
        return StoreError(f"S3 error {code or 'unknown'} on {where}: {err}")

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        check_key(key)
        with self._errors(key):
            if overwrite:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
            else:
                # Conditional write: S3 (2024+), MinIO and moto refuse it with 412 if the key exists.
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        check_key(key)
        with self._errors(key):
            if max_bytes is None:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            # A ranged GET: the server sends at most max_bytes + 1 bytes, whatever the object's size.
            response = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{max_bytes}")
            data = response["Body"].read(max_bytes + 1)
        return _within(data, max_bytes, self.uri(key))

    def exists(self, key: str) -> bool:
        check_key(key)
        # HEAD has no body: a missing bucket also reads as 404 here, i.e. "does not exist".
        try:
            with self._errors(key):
                self.client.head_object(Bucket=self.bucket, Key=key)
        except ObjectNotFoundError:
            return False
        return True

    def list_keys(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []
        with self._errors(None):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(keys)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (tests and local stacks)."""
        try:
            with self._errors(None):
                self.client.head_bucket(Bucket=self.bucket)
            return
        except ObjectNotFoundError:  # HEAD bucket answers a bare 404
            pass
        with self._errors(None):
            if self.region == "us-east-1":
                self.client.create_bucket(Bucket=self.bucket)
            else:
                self.client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={"LocationConstraint": self.region},  # type: ignore[typeddict-item]
                )


def make_store(settings: StoreSettings, base_dir: Path | None = None) -> ObjectStore:
    """The store described by `settings`; a relative local root is taken from `base_dir`."""
    if settings.kind == "local":
        root = Path(settings.root)
        if base_dir is not None and not root.is_absolute():
            root = base_dir / root
        return LocalStore(root)
    endpoint_url = os.environ.get(ENDPOINT_ENV) or settings.endpoint_url
    return S3Store(settings.bucket, endpoint_url=endpoint_url, region=settings.region)
