"""Library output a user cannot act on, filtered where it comes from (by message, category, logger).

Nothing else is silenced: other warnings and Prefect's warnings and errors still show.
"""

from __future__ import annotations

import logging
import os
import warnings

# transformers 5.24 warns each time TRL/PEFT call its deprecated `gradient_checkpointing*` aliases
# (about six times a round); the calls are in those libraries, not in fgrpo or the user's config.
_CHECKPOINTING_ALIASES = r"`(is_)?gradient_checkpointing\w*` is deprecated"


class _DropCompletedTaskRuns(logging.Filter):
    """Prefect's INFO line per finished task run ("Finished in state Completed()")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO and str(record.msg).startswith("Finished in state Completed")
        )


class _DropDatabaseSetup(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and "database tables" in str(record.msg))


def quiet_libraries(live: bool) -> None:
    """Before a human-facing run; ``live``: a live view on a terminal draws the progress instead."""
    warnings.filterwarnings("ignore", message=_CHECKPOINTING_ALIASES, category=FutureWarning)
    # tqdm bars (the GGUF conversion's; transformers' "Loading weights" / "Writing model shards"
    # through huggingface_hub's switch) are one enormous line in a log and break the live view.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # MLflow announces the creation of its SQLite tables on every new database.
    logging.getLogger("mlflow.store.db.utils").addFilter(_DropDatabaseSetup())
    if live:
        # Prefect's per-run INFO lines would scroll the live table away; warnings still show.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def quiet_prefect_task_runs() -> None:
    """After Prefect is imported (its logging config is set up on import)."""
    logger = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _DropCompletedTaskRuns) for f in logger.filters):
        logger.addFilter(_DropCompletedTaskRuns())
