"""An experiment's configuration: the settings of every concern, cross-checked, loaded from YAML.

The per-concern models live in ``settings.py`` and are re-exported here, so callers import every
config type from ``fgrpo_core.config``. Unknown keys are rejected everywhere; errors name the
field path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from fgrpo_core.errors import ConfigError
from fgrpo_core.lora_targets import check_on_disk
from fgrpo_core.settings import (
    EXPERIMENT_PATTERN,
    AggregationSettings,
    ClientSpec,
    DataSettings,
    EvaluationSettings,
    FederationSettings,
    GrpoSettings,
    LoraSettings,
    ModelSettings,
    StoreSettings,
    TrackingSettings,
    _Strict,
)

__all__ = [
    "AggregationSettings",
    "ClientSpec",
    "DataSettings",
    "EvaluationSettings",
    "ExperimentConfig",
    "FederationSettings",
    "GrpoSettings",
    "LoraSettings",
    "ModelSettings",
    "StoreSettings",
    "TrackingSettings",
    "check_data_paths",
    "format_validation_error",
    "load_config",
    "parse_config",
]


class ExperimentConfig(_Strict):
    """A whole federated experiment."""

    name: str = Field(pattern=EXPERIMENT_PATTERN, description="Experiment name; store prefix.")
    seed: int = Field(0, description="Master seed of training (sampling, dropout).")
    output_dir: str = Field("runs", description="Folder for local outputs (MLflow db, reports).")
    model: ModelSettings = Field(default_factory=ModelSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    grpo: GrpoSettings = Field(default_factory=GrpoSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    clients: list[ClientSpec] = Field(min_length=1, description="The data owners.")
    aggregation: AggregationSettings = Field(default_factory=AggregationSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    federation: FederationSettings = Field(default_factory=FederationSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        ids = [c.id for c in self.clients]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"clients: duplicate client ids {dupes}")
        if self.federation.min_clients > len(self.clients):
            raise ValueError(
                f"federation.min_clients ({self.federation.min_clients}) exceeds the number of "
                f"clients ({len(self.clients)})"
            )
        if self.aggregation.lora_aggregation == "freeze_a" and not self.lora.freeze_a:
            raise ValueError("aggregation.lora_aggregation 'freeze_a' needs lora.freeze_a: true")
        # A local or cached model is on disk: its LoRA targets are checked now, not at round 1.
        problem = check_on_disk(self.model, self.lora)
        if problem is not None:
            raise ValueError(problem)
        for c in self.clients:
            unknown = sorted(set(c.families) - set(self.data.families))
            if unknown:
                raise ValueError(
                    f"clients[{c.id}].families {unknown} are not in data.families {self.data.families}"
                )
        return self


def format_validation_error(err: ValidationError) -> list[str]:
    """One line per error: `field.path: message`."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"{path}: {e['msg']}")
    return lines


def parse_config(data: dict[str, Any], config_dir: str | Path | None = None) -> ExperimentConfig:
    """Validate a mapping; raise ConfigError listing every field path that is wrong.

    ``config_dir``: the folder relative reward files ('file.py:fn') are resolved against.
    """
    context = {"config_dir": str(config_dir)} if config_dir is not None else None
    try:
        return ExperimentConfig.model_validate(data, context=context)
    except ValidationError as err:
        raise ConfigError("invalid config:\n  " + "\n  ".join(format_validation_error(err))) from err


def _yaml_error(path: Path, err: yaml.YAMLError) -> ConfigError:
    """The YAML error as `file:line:column: problem`, the way editors and compilers print it."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    detail = f"{problem} ({context})" if context else str(problem)
    return ConfigError(f"{where}: not valid YAML: {detail}")


def check_data_paths(cfg: ExperimentConfig) -> None:
    """Every client's ``data_path`` exists: a missing file would leave that owner out at weight 0.

    Checked for embedded runs only: in a distributed experiment the files live on the owners'
    machines (flows/owner.py) and the coordinator's copy of the config need not name them.
    """
    if cfg.federation.mode != "embedded":
        return
    missing = [
        f"clients[{c.id}].data_path: {c.data_path} does not exist (give an existing JSONL file or "
        "`datasets` folder, relative to the config file, or remove the key)"
        for c in cfg.clients
        if c.data_path is not None and not Path(c.data_path).exists()
    ]
    if missing:
        raise ConfigError("invalid config:\n  " + "\n  ".join(missing))


def load_config(path: str | Path) -> ExperimentConfig:
    """Load and validate a YAML config file; every error names the file (YAML ones the line too)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (pass an existing YAML file)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise _yaml_error(p, err) from err
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of config sections")
    try:
        cfg = parse_config(data, config_dir=p.parent)
        check_data_paths(cfg)
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from err
    return cfg
