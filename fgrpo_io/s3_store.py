"""The S3-compatible object store (MinIO, moto, AWS) behind the ObjectStore interface (fgrpo_io/store.py).

Path-style addressing; conditional writes (If-None-Match) make every write-once key idempotent;
credentials come from the environment or boto3's default chain only, never from configuration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session

from fgrpo_io.store import (
    ENDPOINT_ENV,
    ObjectExistsError,
    ObjectNotFoundError,
    StoreAccessDeniedError,
    StoreError,
    StoreUnavailableError,
    _within,
    check_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Parsing botocore's S3 service model costs ~0.1-0.3 s per client; the loader caches it.
_SERVICE_MODEL_LOADER = botocore.loaders.create_loader()


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
