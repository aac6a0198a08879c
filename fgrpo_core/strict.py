"""The base of every settings model: unknown keys rejected, frozen, defaults validated, every
float finite and every int within a sane maximum (one place, so no field can forget it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator

# A count of 10**9 is a typo or an attack, and a seed must fit the RNGs (numpy, torch) it seeds.
MAX_COUNT = 1_000_000
MAX_SEED = 2**32 - 1


class _Strict(BaseModel):
    # allow_inf_nan=False: every float of every settings model is finite (lr inf, reward_scale nan).
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _sane_ints(self) -> _Strict:
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if info.annotation is not int or not isinstance(value, int):
                continue
            limit = MAX_SEED if name.endswith("seed") else MAX_COUNT
            if abs(value) > limit:
                raise ValueError(f"{name} is {value}, beyond the sane maximum {limit}")
        return self
