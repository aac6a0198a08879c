"""Base model loading (tiny, offline, cached), LoRA construction, adapter transport and prompts."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import peft
import pytest
import torch

from fgrpo_core.base_models import build_tiny_tokenizer, load_base_model
from fgrpo_core.config import EvaluationSettings, LoraSettings, ModelSettings, parse_config
from fgrpo_core.errors import AggregationError, ConfigError
from fgrpo_core.evaluate import evaluate
from fgrpo_core.families import generate_examples
from fgrpo_core.models import (
    ModelBundle,
    build_peft_model,
    format_prompt,
    get_adapter,
    load_bundle,
    save_adapter_folder,
    set_adapter,
)
from fgrpo_core.rewards import exact

# What lora.target_modules listed before it defaulted to "all-linear": the same 7 layers.
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FAMILIES = ["add1", "mul1"]


@pytest.fixture(scope="module")
def tiny_settings(tmp_path_factory: pytest.TempPathFactory) -> ModelSettings:
    cache = tmp_path_factory.mktemp("models")
    return ModelSettings(source="tiny", cache_dir=str(cache), tiny_warmup_steps=150)


def _random_adapter(like: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=generator) * 0.05 for k, v in like.items()}


def _logits(model: torch.nn.Module, text: str) -> torch.Tensor:
    tokenizer = build_tiny_tokenizer()
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_tiny_model_builds_offline_reloads_from_cache_and_is_intermediate(
    tiny_settings: ModelSettings,
) -> None:
    # Prepare / Execute: the first call warms up and caches, the second reads the cache.
    first, tokenizer = load_base_model(tiny_settings, FAMILIES)
    cached = list(Path(tiny_settings.cache_dir).glob(f"{tiny_settings.model_id}-*"))
    second, reloaded_tokenizer = load_base_model(tiny_settings, FAMILIES)
    # Assert: one cache folder, identical weights, left padding kept after reload, frozen.
    assert len(cached) == 1 and (cached[0] / "config.json").is_file()
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)
    assert tokenizer.padding_side == reloaded_tokenizer.padding_side == "left"
    assert reloaded_tokenizer.decode(reloaded_tokenizer.encode("12+3=15\n")) == "12+3=15\n"
    assert not any(p.requires_grad for p in second.parameters())
    # Assert: greedy accuracy is neither 0 nor 1, so GRPO groups are not all equal.
    bundle = ModelBundle(
        build_peft_model(second, LoraSettings()), reloaded_tokenizer, False, "t", torch.device("cpu")
    )
    examples = [ex for f in FAMILIES for ex in generate_examples(f, 50, random.Random(5))]
    accuracy = evaluate(bundle, examples, exact, EvaluationSettings()).accuracy
    assert 0.1 <= accuracy <= 0.7, accuracy  # measured 0.22 (add1 0.18, mul1 0.26)


def test_tiny_model_is_deterministic_given_the_seed(tmp_path: Path) -> None:
    # Prepare: two separate caches, so both models are built from scratch.
    settings_a = ModelSettings(source="tiny", cache_dir=str(tmp_path / "a"), tiny_warmup_steps=10, seed=3)
    settings_b = ModelSettings(source="tiny", cache_dir=str(tmp_path / "b"), tiny_warmup_steps=10, seed=3)
    rng_before = torch.get_rng_state()
    # Execute
    model_a, _ = load_base_model(settings_a, FAMILIES)
    model_b, _ = load_base_model(settings_b, FAMILIES)
    # Assert: bit-identical weights, and the global torch RNG was not consumed.
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_build_peft_model_is_seeded_and_leaves_the_global_rng_alone(tiny_settings: ModelSettings) -> None:
    # Prepare
    lora = LoraSettings(r=4, init_seed=11)
    rng_before = torch.get_rng_state()
    # Execute: two clients build their adapter on their own copy of the base model.
    adapter_a = get_adapter(build_peft_model(load_base_model(tiny_settings, FAMILIES)[0], lora))
    adapter_b = get_adapter(build_peft_model(load_base_model(tiny_settings, FAMILIES)[0], lora))
    other = get_adapter(
        build_peft_model(load_base_model(tiny_settings, FAMILIES)[0], LoraSettings(r=4, init_seed=12))
    )
    # Assert
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert list(adapter_a) == sorted(adapter_a) and adapter_a.keys() == adapter_b.keys()
    assert all(torch.equal(adapter_a[k], adapter_b[k]) for k in adapter_a)
    a_keys = [k for k in adapter_a if ".lora_A." in k]
    b_keys = [k for k in adapter_a if ".lora_B." in k]
    assert len(a_keys) == len(b_keys) == 7 * tiny_settings.tiny_layers  # all 7 linear layers per block
    assert any(not torch.equal(adapter_a[k], other[k]) for k in a_keys)
    assert all(not adapter_a[k].any() for k in b_keys)  # PEFT starts B at zero: B·A = 0
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in adapter_a.values())


def test_initial_adapter_replays_peft_own_seeded_initialisation(tiny_settings: ModelSettings) -> None:
    # Prepare: PEFT's own initialisation under a clean global seed (what earlier versions used, and
    # what every committed benchmark result started from).
    lora = LoraSettings(r=4, init_seed=11)
    config = peft.LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=LLAMA_LINEAR
    )
    torch.manual_seed(lora.init_seed)
    reference = get_adapter(peft.get_peft_model(load_base_model(tiny_settings, FAMILIES)[0], config))
    # Execute
    adapter = get_adapter(build_peft_model(load_base_model(tiny_settings, FAMILIES)[0], lora))
    # Assert: bit-identical; if a PEFT upgrade changes its draw order, this names it.
    assert adapter.keys() == reference.keys()
    assert all(torch.equal(adapter[k], reference[k]) for k in adapter)


def test_initial_adapter_ignores_draws_from_the_global_rng_during_its_build(
    tiny_settings: ModelSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the adapter built undisturbed; then every weight initialisation is preceded by a
    # draw from the global RNG, as when another client trains in a thread of the same process.
    lora = LoraSettings(r=4, init_seed=5)
    undisturbed = get_adapter(build_peft_model(load_base_model(tiny_settings, FAMILIES)[0], lora))
    kaiming = torch.nn.init.kaiming_uniform_

    def after_another_threads_draw(*args: Any, **kwargs: Any) -> torch.Tensor:
        torch.rand(3)
        return kaiming(*args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", after_another_threads_draw)
    # Execute
    disturbed = get_adapter(build_peft_model(load_base_model(tiny_settings, FAMILIES)[0], lora))
    # Assert
    assert all(torch.equal(disturbed[k], undisturbed[k]) for k in undisturbed)


def test_initial_adapter_is_the_same_while_another_thread_trains(tiny_settings: ModelSettings) -> None:
    # Prepare: a thread drawing from the global RNG non-stop, as a client training in parallel does.
    lora = LoraSettings(r=4, init_seed=9)
    expected = get_adapter(build_peft_model(load_base_model(tiny_settings, FAMILIES)[0], lora))
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            torch.rand(256)

    other = threading.Thread(target=draw, daemon=True)
    other.start()
    # Execute
    try:
        built = [
            get_adapter(build_peft_model(load_base_model(tiny_settings, FAMILIES)[0], lora)) for _ in range(3)
        ]
    finally:
        stop.set()
        other.join()
    # Assert
    assert all(torch.equal(adapter[k], expected[k]) for adapter in built for k in expected)


def test_freeze_a_makes_lora_a_non_trainable(tiny_settings: ModelSettings) -> None:
    # Prepare / Execute
    model = build_peft_model(load_base_model(tiny_settings, FAMILIES)[0], LoraSettings(r=4, freeze_a=True))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    # Assert: exactly the B matrices train.
    assert trainable and all(".lora_B." in name for name in trainable)
    lora_b = {name for name, _ in model.named_parameters() if ".lora_B." in name}
    assert trainable == lora_b


def test_set_then_get_adapter_round_trips_and_rejects_mismatches(tiny_settings: ModelSettings) -> None:
    # Prepare
    model = build_peft_model(load_base_model(tiny_settings, FAMILIES)[0], LoraSettings(r=4))
    wanted = _random_adapter(get_adapter(model), seed=0)
    # Execute
    set_adapter(model, wanted)
    got = get_adapter(model)
    # Assert
    assert got.keys() == wanted.keys()
    assert all(torch.equal(got[k], wanted[k]) for k in wanted)
    missing = dict(list(wanted.items())[1:])
    with pytest.raises(AggregationError, match="missing"):
        set_adapter(model, missing)
    first_key = next(iter(wanted))
    reshaped = {**wanted, first_key: torch.zeros(3, 3)}
    with pytest.raises(AggregationError, match="shape"):
        set_adapter(model, reshaped)


def test_saved_adapter_folder_loads_with_peft_and_gives_the_same_logits(
    tiny_settings: ModelSettings, tmp_path: Path
) -> None:
    # Prepare: a trained-looking adapter (B non-zero) on one copy of the base model.
    model = build_peft_model(load_base_model(tiny_settings, FAMILIES)[0], LoraSettings(r=4))
    adapter = _random_adapter(get_adapter(model), seed=1)
    set_adapter(model, adapter)
    # Execute: save, then load it with plain PEFT onto a fresh copy of the base model.
    folder = save_adapter_folder(model.peft_config["default"], adapter, tmp_path / "adapter")
    loaded = peft.PeftModel.from_pretrained(load_base_model(tiny_settings, FAMILIES)[0], folder)
    # Assert
    assert {p.name for p in folder.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    expected, actual = _logits(model, "3+4="), _logits(loaded, "3+4=")
    base_only = _logits(load_base_model(tiny_settings, FAMILIES)[0], "3+4=")
    assert torch.allclose(expected, actual, atol=1e-6)
    assert not torch.allclose(expected, base_only, atol=1e-4)  # the adapter does change the output


def test_format_prompt_for_tiny_and_chat_models() -> None:
    # Prepare
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    # Execute / Assert
    assert format_prompt(tokenizer, "3+4", chat=False) == "3+4="
    assert format_prompt(tokenizer, "3+4", chat=True) == (
        "<user>What is 3+4? Answer with just the number.<assistant>"
    )


def test_load_bundle_and_local_source_errors(tiny_settings: ModelSettings, tmp_path: Path) -> None:
    # Prepare
    cfg = parse_config(
        {
            "name": "t",
            "clients": [{"id": "a", "families": FAMILIES}],
            "data": {"families": FAMILIES},
            "model": tiny_settings.model_dump(),
            "lora": {"r": 4},
            "grpo": {"device": "auto"},
        }
    )
    # Execute
    bundle = load_bundle(cfg, device="cpu")
    # Assert
    assert isinstance(bundle.model, peft.PeftModel)
    assert bundle.chat is False and bundle.model_id == tiny_settings.model_id
    assert bundle.device == torch.device("cpu")
    assert list(bundle.model.peft_config) == ["default"]
    with pytest.raises(ConfigError, match=r"model\.path"):
        load_base_model(ModelSettings(source="local", path=str(tmp_path / "nowhere")), FAMILIES)
