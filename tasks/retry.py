"""Which task failures deserve a retry: transient I/O only, never a judgement about the data."""

from __future__ import annotations

from typing import Any

from fgrpo_io.store import StoreUnavailableError
from fgrpo_io.tracking import TrackingError

TRANSIENT = (StoreUnavailableError, TrackingError, ConnectionError, TimeoutError)


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry when the failure was a transient I/O error.

    A bad delta, a quorum miss or a config error gives the same answer on every try, so retrying
    only delays the message the operator needs.
    """
    try:
        state.result(raise_on_failure=True)
    except TRANSIENT:
        return True
    except BaseException:
        return False
    return False
