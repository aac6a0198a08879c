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
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from fgrpo_core.config import StoreSettings
from fgrpo_core.errors import FgrpoError

ENDPOINT_ENV = "FGRPO_S3_ENDPOINT_URL"


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


def make_store(settings: StoreSettings, base_dir: Path | None = None) -> ObjectStore:
    """The store described by `settings`; a relative local root is taken from `base_dir`."""
    if settings.kind == "local":
        root = Path(settings.root)
        if base_dir is not None and not root.is_absolute():
            root = base_dir / root
        return LocalStore(root)
    from fgrpo_io.s3_store import S3Store  # boto3 loads only for an S3 store

    endpoint_url = os.environ.get(ENDPOINT_ENV) or settings.endpoint_url
    return S3Store(settings.bucket, endpoint_url=endpoint_url, region=settings.region)
