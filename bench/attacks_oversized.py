"""Attack 4 of issue 11: a delta far larger than its manifest says, and what reading it costs.

The coordinator's read (``exchange.read_client_delta``) is measured in a fresh process each time,
so that the peak RSS it adds is its own: the honest owner's delta, the attacker's, and the
unbounded read as it was before issue 11 (whole object, sha256, decode) as the control.

    python -m bench.attacks_oversized SPEC_JSON   # the child process; bench/attacks.py runs it
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bench.attack_round import ATTACKER, HONEST, Delivery, Federation, honest_delivery, row
from fgrpo_core.config import ExperimentConfig
from fgrpo_core.deltas import decode, encode, sha256_hex
from fgrpo_core.errors import FgrpoError
from fgrpo_core.federation import ClientUpdate
from fgrpo_core.manifest import ClientManifest, check_sha256
from fgrpo_core.types import ServerState
from fgrpo_core.update_checks import Expected
from fgrpo_io import exchange, layout
from fgrpo_io.exchange import Identity
from fgrpo_io.store import LocalStore, ObjectStore, put_json

REPO = Path(__file__).resolve().parents[1]


def _blob(nbytes: int) -> bytes:
    """A well-formed safetensors file of about ``nbytes`` (one float32 tensor): decodable if read."""
    return encode({"attack": torch.zeros(max(1, nbytes // 4))})


def oversized_delivery(update: ClientUpdate, cfg: ExperimentConfig, blob: bytes, claimed: int) -> Delivery:
    """owner-b writes ``blob`` under its delta key and a manifest claiming ``claimed`` bytes."""

    def deliver(store: ObjectStore, ident: Identity, t: int) -> None:
        key = layout.client_delta_key(ident.prefix, ident.experiment, ATTACKER, t)
        store.put_bytes(key, blob)
        manifest = ClientManifest(
            experiment=ident.experiment,
            round=t,
            client_id=ATTACKER,
            base_model_id=ident.base_model_id,
            base_revision=ident.base_revision,
            adapter_config_hash=ident.adapter_config_hash,
            encoding=cfg.federation.delta_dtype,
            sha256=sha256_hex(blob),
            nbytes=claimed,
            delta_key=key,
            stats=update.stats,
        )
        put_json(
            store,
            layout.client_manifest_key(ident.prefix, ident.experiment, ATTACKER, t),
            manifest.model_dump(mode="json"),
        )

    return deliver


def _hwm_bytes() -> int:
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024  # type: ignore[union-attr]


def probe_read(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: one read of owner ``spec['client']``'s delta, its peak memory and bytes read.

    ``coordinator``: exchange.read_client_delta (envelope first, bounded read). ``unbounded``: the
    read as it was before issue 11 (whole object, sha256, decode), the control.
    """
    import psutil

    store, ident, expected = (
        LocalStore(Path(spec["root"])),
        Identity(**spec["ident"]),
        Expected(**spec["expected"]),
    )
    proc = psutil.Process()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark to the current RSS
    rss0, read0 = proc.memory_info().rss, proc.io_counters().read_chars
    reason = "read and decoded"
    try:
        if spec["mode"] == "unbounded":
            mkey = layout.client_manifest_key(
                ident.prefix, ident.experiment, expected.client_id, expected.round
            )
            manifest = ClientManifest.model_validate_json(store.get_bytes(mkey))
            data = store.get_bytes(manifest.delta_key)
            check_sha256(data, manifest.sha256, store.uri(manifest.delta_key))
            decode(data)
        else:
            exchange.read_client_delta(store, ident, expected)
    except FgrpoError as err:
        reason = f"refused: {err}"
    return {
        "peak_rss_added_bytes": _hwm_bytes() - rss0,
        "bytes_read": proc.io_counters().read_chars - read0,
        "reason": reason,
    }


def _probe(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.attacks_oversized", json.dumps(spec)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def oversized(fed: Federation, big_bytes: int) -> dict[str, Any]:
    """owner-b writes ``big_bytes`` under its delta key, claiming nbytes = 10; reads measured apart."""
    cfg = fed.config("oversized")
    honest_a, honest_b = fed.train(fed.theta0, HONEST, 1), fed.train(fed.theta0, ATTACKER, 1)
    blob = _blob(big_bytes)
    attacked = {HONEST: honest_delivery(honest_a, cfg), ATTACKER: oversized_delivery(honest_b, cfg, blob, 10)}
    report = fed.round(cfg, 1, fed.theta0, ServerState(), attacked)
    reference = fed.honest_round(fed.config("oversized-honest"), 1, fed.theta0, ServerState())
    ident = exchange.identity(cfg)
    memory = {}
    for label, cid, mode in (
        ("honest_read", HONEST, "coordinator"),
        ("attacker_read", ATTACKER, "coordinator"),
        ("unbounded_control", ATTACKER, "unbounded"),
    ):
        expected = exchange.expected_update(ident, 1, cid, fed.theta0, cfg.federation.delta_dtype)
        spec = {
            "root": str(fed.store.root),
            "ident": asdict(ident),
            "expected": asdict(expected),
            "mode": mode,
        }
        memory[label] = _probe(spec)
    mib = len(blob) / 2**20
    injected = f"owner-b: a {mib:.0f} MiB delta (valid safetensors) whose manifest claims nbytes = 10"
    out = row("4", "oversized", injected, report, reference, fed.next_round(cfg, report, 2))
    return {**out, "blob_bytes": len(blob), "expected_delta_bytes": expected.nbytes, "memory": memory}


if __name__ == "__main__":
    print(json.dumps(probe_read(json.loads(sys.argv[1]))))
