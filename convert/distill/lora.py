"""LoRA students (peft): train low-rank adapters on every linear layer instead of all weights.

Cheaper optimizer state (the moments cover only the adapters) and a gentler update for large
students; the adapters are merged into the weights before export, so what ships is a plain
checkpoint the converter and llama.cpp read like any other.
"""

from __future__ import annotations

from typing import Any


def add_lora(model: Any, rank: int) -> Any:
    """`model` wrapped with rank-`rank` adapters on all its linear layers (the output head excepted)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def merge_lora(model: Any) -> Any:
    """The plain transformers model with the adapters folded into its weights."""
    return model.merge_and_unload()
