"""The fault suite's shared trained round: one session-wide fixture for every file in this folder."""

from tests.faults.shared import round1

__all__ = ["round1"]
