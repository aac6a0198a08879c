"""Store keys of SPEC §7, built in one place.

    {prefix}/{experiment}/global/round-{t:04d}/adapter.safetensors   and .../manifest.json
    (and .../result.json: the round's RoundResult)
    {prefix}/{experiment}/clients/{client}/round-{t:04d}/delta.safetensors   and .../manifest.json
    (or .../failure.json: the owner could not run that round)
    {prefix}/{experiment}/state/round-{t:04d}.json
    {prefix}/{experiment}/global/control/{session}/round-{t:04d}-closed.json   and .../stop.json
    {prefix}/{experiment}/clients/{client}/round-{t:04d}/failed.json
    {prefix}/{experiment}/clients/{client}/sessions/{session}.json

An empty prefix gives keys that start with the experiment (never with "/"). Each data owner's
credentials may write only under its `client_prefix` and read under `global_prefix`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# One definition with the config's validation (a bad prefix fails at validate-config time).
from fgrpo_core.settings import CLIENT_ID_PATTERN, EXPERIMENT_PATTERN, PREFIX_SEGMENT_PATTERN
from fgrpo_io.store import StoreError

# An owner session: the coordinator's id of one experiment invocation's warm owner runs.
SESSION_PATTERN = r"^[0-9a-f][0-9a-f-]{7,63}$"
_STATE_KEY = re.compile(r"(?:^|/)state/round-(\d{4,})\.json$")


def _check(value: str, pattern: str, what: str) -> str:
    if not re.fullmatch(pattern, value):
        raise StoreError(f"invalid {what} {value!r} for a store key: it must match {pattern}")
    return value


def _base(prefix: str, experiment: str) -> str:
    """`{prefix}/{experiment}` with the prefix validated segment by segment ("" allowed)."""
    _check(experiment, EXPERIMENT_PATTERN, "experiment name")
    if prefix == "":
        return experiment
    for segment in prefix.split("/"):
        _check(segment, PREFIX_SEGMENT_PATTERN, f"segment of store prefix {prefix!r}:")
    return f"{prefix}/{experiment}"


def _round(t: int) -> str:
    if t < 0:
        raise StoreError(f"round {t} is negative; rounds start at 0")
    return f"round-{t:04d}"


def global_prefix(prefix: str, experiment: str) -> str:
    """Folder of every global adapter of an experiment (ends with "/")."""
    return f"{_base(prefix, experiment)}/global/"


def global_adapter_key(prefix: str, experiment: str, t: int) -> str:
    """Key of the global adapter theta_t."""
    return f"{global_prefix(prefix, experiment)}{_round(t)}/adapter.safetensors"


def global_step_key(prefix: str, experiment: str, t: int) -> str:
    """Key of the encoded step from theta_{t-1} to theta_t (what owners download)."""
    return f"{global_prefix(prefix, experiment)}{_round(t)}/step.safetensors"


def global_manifest_key(prefix: str, experiment: str, t: int) -> str:
    """Key of the manifest of theta_t."""
    return f"{global_prefix(prefix, experiment)}{_round(t)}/manifest.json"


def round_result_key(prefix: str, experiment: str, t: int) -> str:
    """Key of round t's RoundResult (rows, evaluation, gate decision), written just before its state."""
    return f"{global_prefix(prefix, experiment)}{_round(t)}/result.json"


def initial_evaluation_key(prefix: str, experiment: str) -> str:
    """Key of theta_0's global evaluation (EvalSummary), written once before round 1."""
    return f"{global_prefix(prefix, experiment)}{_round(0)}/evaluation.json"


def client_prefix(prefix: str, experiment: str, client: str) -> str:
    """Folder a data owner may write to (ends with "/")."""
    _check(client, CLIENT_ID_PATTERN, "client id")
    return f"{_base(prefix, experiment)}/clients/{client}/"


def client_delta_key(prefix: str, experiment: str, client: str, t: int) -> str:
    """Key of client `client`'s delta computed from theta_t."""
    return f"{client_prefix(prefix, experiment, client)}{_round(t)}/delta.safetensors"


def client_manifest_key(prefix: str, experiment: str, client: str, t: int) -> str:
    """Key of the manifest of that delta."""
    return f"{client_prefix(prefix, experiment, client)}{_round(t)}/manifest.json"


def client_failure_key(prefix: str, experiment: str, client: str, t: int) -> str:
    """Key of client `client`'s permanent failure in round t (an OwnerFailure), if it had one."""
    return f"{client_prefix(prefix, experiment, client)}{_round(t)}/failure.json"


def state_prefix(prefix: str, experiment: str) -> str:
    """Folder of the committed server states (ends with "/")."""
    return f"{_base(prefix, experiment)}/state/"


def state_key(prefix: str, experiment: str, t: int) -> str:
    """Key of the server state committed after round t."""
    return f"{state_prefix(prefix, experiment)}{_round(t)}.json"


def committed_rounds(keys: Iterable[str]) -> list[int]:
    """Sorted round numbers of the state keys among `keys`; other keys are ignored."""
    matches = (_STATE_KEY.search(key) for key in keys)
    return sorted({int(m.group(1)) for m in matches if m is not None})


def coordinator_prefix(prefix: str, experiment: str) -> str:
    """Folder only the coordinator reads and writes (config pin, lease); ends with "/"."""
    return f"{_base(prefix, experiment)}/coordinator/"


def config_pin_key(prefix: str, experiment: str) -> str:
    """Key of the experiment's config pin, written once with round 0."""
    return f"{coordinator_prefix(prefix, experiment)}config-pin.json"


def lease_prefix(prefix: str, experiment: str) -> str:
    """Folder of the coordinator lease's generations (ends with "/")."""
    return f"{coordinator_prefix(prefix, experiment)}lease/"


def lease_key(prefix: str, experiment: str, generation: int) -> str:
    """Key of one generation of the coordinator lease (written once; the newest one counts)."""
    if generation < 1:
        raise StoreError(f"lease generation {generation} must be >= 1")
    return f"{lease_prefix(prefix, experiment)}{generation:08d}.json"


# --- warm owners (flows/owner_sessions.py): the coordinator's markers, the owners' notes -------


def control_prefix(prefix: str, experiment: str, session: str) -> str:
    """Folder of one owner session's markers, under global/ so every owner may read it."""
    return f"{global_prefix(prefix, experiment)}control/{_check(session, SESSION_PATTERN, 'session id')}/"


def round_closed_key(prefix: str, experiment: str, session: str, t: int) -> str:
    """Written when the coordinator stops waiting for round t: an owner skips or stops round t."""
    return f"{control_prefix(prefix, experiment, session)}{_round(t)}-closed.json"


def stop_key(prefix: str, experiment: str, session: str) -> str:
    """Written when the experiment ends (or fails): every owner run of the session exits."""
    return f"{control_prefix(prefix, experiment, session)}stop.json"


def client_failure_note_key(prefix: str, experiment: str, client: str, t: int) -> str:
    """An owner's note that its round t failed (any reason), so the coordinator need not wait for it."""
    return f"{client_prefix(prefix, experiment, client)}{_round(t)}/failed.json"


def owner_session_key(prefix: str, experiment: str, client: str, session: str) -> str:
    """An owner's report of one session: rounds trained, skipped, failed, and its model loads."""
    _check(session, SESSION_PATTERN, "session id")
    return f"{client_prefix(prefix, experiment, client)}sessions/{session}.json"
