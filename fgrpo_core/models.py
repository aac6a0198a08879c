"""The LoRA adapter on a frozen base model: wrap with PEFT, move adapters in and out, prompt, save.

The base model (``base_models.py``) is frozen and identical on every client; only the LoRA adapter
(PEFT state-dict names -> tensors, see ``types.Adapter``) changes. The initial adapter is drawn from
a private ``torch.Generator`` seeded with ``lora.init_seed``, never from the process-wide RNG: clients
training in other threads of the same process draw from that one, and a draw of theirs between two
of PEFT's would change theta_0 (seen in CI: a bundle built while another client trained carried a
different initial adapter into a later experiment).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import peft
import torch
from safetensors.torch import save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fgrpo_core.base_models import load_base_model
from fgrpo_core.config import ExperimentConfig, LoraSettings
from fgrpo_core.errors import AggregationError, ConfigError
from fgrpo_core.families import Example
from fgrpo_core.gpu_options import require_gpu_options
from fgrpo_core.lora_targets import target_problem
from fgrpo_core.types import Adapter


@dataclass
class ModelBundle:
    """A frozen base model with the LoRA adapter attached, and how to prompt it."""

    model: peft.PeftModel
    tokenizer: PreTrainedTokenizerBase
    chat: bool
    model_id: str
    device: torch.device
    # The adapter as built (seeded by lora.init_seed), kept apart from the model's current adapter:
    # a bundle lent to several tasks holds whatever the last task loaded or trained.
    initial_adapter: Adapter = field(default_factory=dict)
    # How a prompt that does not go through the chat template is written (model.plain_prompt).
    plain_prompt: str = "{prompt}"


def build_peft_model(base: PreTrainedModel, lora: LoraSettings) -> peft.PeftModel:
    """Attach the LoRA adapter; its initial A matrices depend on ``lora.init_seed`` only."""
    problem = target_problem(base, lora.target_modules)
    if problem is not None:
        raise ConfigError(problem)
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    devices = [base.device.index or 0] if base.device.type == "cuda" else []
    # PEFT draws the new layers' weights from the global RNG; those draws are replaced below, and
    # the fork leaves the caller's own RNG stream as it was.
    with torch.random.fork_rng(devices=devices):
        model = peft.get_peft_model(base, config)
    _seed_lora_weights(model, lora.init_seed)
    if lora.freeze_a:
        for name, param in model.named_parameters():
            if ".lora_A." in name:
                param.requires_grad_(False)
    return model


def _seed_lora_weights(model: peft.PeftModel, seed: int) -> None:
    """Set every LoRA layer to PEFT's default initialisation, drawn from ``Generator(seed)``.

    The draws replay PEFT's own sequence under ``torch.manual_seed(seed)`` (per LoRA layer, in
    module order: ``nn.Linear`` initialises A and B, then ``reset_lora_parameters`` draws A again
    with kaiming-uniform and zeroes B), so theta_0 is bit-identical to what earlier versions and
    results used; ``tests/test_models.py`` pins this against PEFT itself.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, peft.tuners.lora.LoraLayer):
                continue
            for name in module.lora_A:
                a = cast(torch.nn.Linear, module.lora_A[name]).weight
                b = cast(torch.nn.Linear, module.lora_B[name]).weight
                _linear_init(a.shape, generator)  # nn.Linear(in, r): discarded by PEFT
                _linear_init(b.shape, generator)  # nn.Linear(r, out): zeroed by PEFT
                a.copy_(_linear_init(a.shape, generator))
                b.zero_()


def _linear_init(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """``nn.Linear``'s weight initialisation (kaiming-uniform, a=sqrt(5)) from ``generator``."""
    weight = torch.empty(shape)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    return weight


def load_bundle(cfg: ExperimentConfig, device: str | None = None) -> ModelBundle:
    """Base model + LoRA adapter on the configured device ('auto': CUDA when present) and CPU threads."""
    wanted = device or cfg.grpo.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("grpo.device is 'cuda' but no CUDA device is visible: use 'auto' or 'cpu'")
    require_gpu_options(cfg, wanted)
    if cfg.grpo.torch_threads:
        # Process-wide, so training and evaluation alike; each process that trains loads a bundle.
        torch.set_num_threads(cfg.grpo.torch_threads)
    base, tokenizer = load_base_model(cfg.model, cfg.data.families)
    if cfg.model.load_in_4bit:
        # QLoRA: norms in fp32, inputs that require grad; the 4-bit weights are placed already.
        base = peft.prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=cfg.grpo.gradient_checkpointing
        )
    model = build_peft_model(base, cfg.lora)
    if cfg.model.source == "hub":
        # Recorded in adapter_config.json: the adapter names its base by Hub id and revision.
        model.peft_config["default"].revision = cfg.model.revision
    torch_device = torch.device(wanted)
    if not cfg.model.load_in_4bit:
        model.to(torch_device)
    has_template = getattr(tokenizer, "chat_template", None) is not None
    chat = {"chat": True, "plain": False}.get(
        cfg.model.prompt_format, cfg.model.source != "tiny" and has_template
    )
    if chat and not has_template:
        raise ConfigError(
            f"model.prompt_format is 'chat' but the tokenizer of {cfg.model.model_id} has no chat "
            "template: use prompt_format 'plain' (see model.plain_prompt) or 'auto'"
        )
    return ModelBundle(
        model=model,
        tokenizer=tokenizer,
        chat=chat,
        model_id=cfg.model.model_id,
        device=torch_device,
        initial_adapter=get_adapter(model),
        plain_prompt=cfg.model.plain_prompt,
    )


def get_adapter(model: peft.PeftModel) -> Adapter:
    """The adapter's tensors as detached float32 CPU copies, keys sorted."""
    state = peft.get_peft_model_state_dict(model)
    return {key: state[key].detach().to("cpu", torch.float32).clone() for key in sorted(state)}


def set_adapter(model: peft.PeftModel, adapter: Adapter) -> None:
    """Load ``adapter`` into the model after checking that keys and shapes match exactly."""
    current = peft.get_peft_model_state_dict(model)
    missing = sorted(set(current) - set(adapter))
    extra = sorted(set(adapter) - set(current))
    if missing or extra:
        raise AggregationError(
            f"adapter keys do not match the model's LoRA layers (missing {missing[:3]}, extra {extra[:3]}): "
            "the adapter was built for another base model or LoRA config"
        )
    for key in sorted(current):
        if tuple(adapter[key].shape) != tuple(current[key].shape):
            raise AggregationError(
                f"adapter tensor {key} has shape {tuple(adapter[key].shape)}, the model expects "
                f"{tuple(current[key].shape)}: check lora.r and the base model"
            )
    result: Any = peft.set_peft_model_state_dict(model, adapter)
    if result.unexpected_keys:
        raise AggregationError(f"PEFT did not load adapter keys {result.unexpected_keys[:3]}")


def format_prompt(tokenizer: PreTrainedTokenizerBase, question: str, chat: bool) -> str:
    """The model's prompt for a bare question ("3+4")."""
    if not chat:
        return f"{question}="
    messages = [{"role": "user", "content": f"What is {question}? Answer with just the number."}]
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def example_prompt(bundle: ModelBundle, example: Example) -> str:
    """The text the model sees for ``example`` (README "Prompt format").

    A family question goes through the chat template ("What is 3+4? Answer with just the
    number.") or ``plain_prompt`` with "3+4="; an owner's list of messages through the chat
    template, or ``plain_prompt`` with the contents joined by newlines; an owner's string prompt
    through ``plain_prompt`` (default "{prompt}": as is, like TRL's standard format).
    """
    if example.prompt is None:
        if bundle.chat:
            return format_prompt(bundle.tokenizer, example.question, chat=True)
        return bundle.plain_prompt.replace(
            "{prompt}", format_prompt(bundle.tokenizer, example.question, False)
        )
    if isinstance(example.prompt, list) and bundle.chat:
        text = bundle.tokenizer.apply_chat_template(
            example.prompt, tokenize=False, add_generation_prompt=True
        )
        return str(text)
    return bundle.plain_prompt.replace("{prompt}", example.question)


def save_adapter_folder(config: peft.PeftConfig, adapter: Adapter, folder: Path) -> Path:
    """Write ``adapter`` as a PEFT folder that ``peft.PeftModel.from_pretrained(base, folder)`` loads.

    ``config``: the adapter's PEFT config (``model.peft_config["default"]`` of its bundle).

    Its ``adapter_config.json`` names the base model by Hub id (and ``revision``) or by absolute
    folder (``base_models.load_base_model`` sets it), so it loads from any working directory.
    """
    folder.mkdir(parents=True, exist_ok=True)
    saved = copy.deepcopy(config)
    saved.inference_mode = True
    saved.save_pretrained(str(folder))
    tensors = {key: adapter[key].detach().to("cpu", torch.float32).contiguous() for key in sorted(adapter)}
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    return folder
