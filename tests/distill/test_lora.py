"""LoRA students: only the adapters train, and the merged model is a plain checkpoint with the
trained behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from convert.distill.data import load_examples, make_blocks
from convert.distill.lora import add_lora, merge_lora
from convert.distill.losses import LossOptions
from convert.distill.student import build_student
from convert.distill.tokenizers import load_tokenizer
from convert.distill.train import TrainOptions, divergence_to_teacher, train


@pytest.mark.slow
def test_lora_trains_adapters_only_and_merges_into_a_plain_student(teacher, train_text: Path, held_text: Path,
                                                                    tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(teacher.path)
    teacher_model = AutoModelForCausalLM.from_pretrained(teacher.path, dtype=torch.float32)
    blocks = make_blocks(load_examples(train_text, tok), 32, pack=True, pad_id=tok.pad_token_id)
    held = make_blocks(load_examples(held_text, tok), 32, pack=True, pad_id=tok.pad_token_id)
    student = build_student(teacher_model, [0, 3])
    plain_keys = set(student.state_dict())
    base_before = {k: v.clone() for k, v in student.state_dict().items()}
    before = divergence_to_teacher(student, teacher_model, held)
    peft_model = add_lora(student, 8)
    options = TrainOptions(steps=30, batch_size=4, lr=3e-3, loss=LossOptions(temperature=1.0, alpha=1.0))
    train(teacher_model, peft_model, blocks, options, tmp_path)
    ids = torch.tensor([held[0].ids])
    with torch.no_grad():
        adapted = peft_model(input_ids=ids).logits
    for name, param in peft_model.named_parameters():  # the base weights did not move
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(param, base_before[key]), name
    merged = merge_lora(peft_model)
    assert set(merged.state_dict()) == plain_keys  # no adapter tensors left for the converter to trip on
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, adapted, atol=1e-4)
    after = divergence_to_teacher(merged, teacher_model, held)
    print(f"LoRA r=8: held-out KLD {before:.4f} -> {after:.4f}")
    assert after < 0.75 * before
