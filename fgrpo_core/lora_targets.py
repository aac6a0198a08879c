"""Which layers of a base model can carry LoRA, and a check of ``lora.target_modules`` against them.

"Linear" means what PEFT's ``"all-linear"`` targets: ``nn.Linear`` and transformers' ``Conv1D``
(GPT-2), except the output head. ``check_on_disk`` runs the check at config validation on a
skeleton of the model built on the ``meta`` device (no weights read) when its files are on disk.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and transformers load only when a check runs
    import torch

    from fgrpo_core.settings import LoraSettings, ModelSettings


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """Sorted leaf names of the model's linear layers (the output head excluded)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head and name
    }
    return sorted(names)


def target_problem(model: torch.nn.Module, target_modules: list[str] | str) -> str | None:
    """What is wrong with ``target_modules`` for ``model`` (None when every name is a linear layer)."""
    linear = linear_layer_names(model)
    if not linear:
        return f"the base model {type(model).__name__} has no linear layer that LoRA could target"
    if isinstance(target_modules, str):
        return None  # "all-linear": PEFT picks them
    unknown = [t for t in target_modules if t not in linear]
    if not unknown:
        return None
    return (
        f"lora.target_modules {unknown} are not linear layers of {type(model).__name__}; its "
        f"linear layers are {linear} (or use lora.target_modules: all-linear)"
    )


def _config_folder(model: ModelSettings) -> Path | None:
    """The folder holding the model's config.json when it is on disk, else None."""
    if model.source == "local" and model.path:
        folder = Path(model.path)
        return folder if (folder / "config.json").is_file() else None
    if model.source == "hub" and model.name:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(
            model.name, "config.json", cache_dir=model.hub_cache, revision=model.revision
        )
        return Path(found).parent if isinstance(found, str) else None
    return None


@functools.lru_cache(maxsize=16)
def _problem_for(folder: str, targets: tuple[str, ...] | str) -> str | None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return target_problem(skeleton, targets if isinstance(targets, str) else list(targets))


def check_on_disk(model: ModelSettings, lora: LoraSettings) -> str | None:
    """The target problem of a local or cached Hub model; None when fine or not on disk."""
    folder = _config_folder(model)
    if folder is None:
        return None
    targets = lora.target_modules if isinstance(lora.target_modules, str) else tuple(lora.target_modules)
    try:
        return _problem_for(str(folder), targets)
    except (OSError, ValueError, KeyError) as err:
        return f"model at {folder} cannot be read as a causal LM ({type(err).__name__}: {err})"
