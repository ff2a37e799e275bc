"""Student shapes: a Gemma 3 layer subset runs in llama.cpp as in PyTorch (its own per-layer
sliding/full pattern, not llama.cpp's every-6th default); a narrower MLP keeps the channels that
matter. (An existing checkpoint as the student: tests/distill/test_distill_cli.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from convert.distill.student import build_student
from edge_ai.errors import EdgeAIError


@pytest.mark.slow
def test_a_gemma3_layer_subset_attends_in_llama_cpp_as_in_pytorch(tmp_path: Path) -> None:
    """Teacher: 8 layers in Gemma 3's layout (every 6th full: layer 5). Student: layers 0-4 and 7,
    so its layer 5 is a sliding one; llama.cpp's built-in gemma3 layout would make it full. Over a
    prompt 4x the window, the f32 GGUF's logits must match the PyTorch student's."""
    import torch
    from tiny_hf import TEXTS, llama_logits, load_llama, relative_error
    from tiny_hf_more import SLIDING_WINDOW, build_more
    from transformers import AutoModelForCausalLM

    from convert.gguf import convert_checkpoint

    kinds = ["full_attention" if i % 6 == 5 else "sliding_attention" for i in range(8)]
    ckpt = build_more("gemma3", tmp_path / "teacher", num_hidden_layers=8, layer_types=kinds)
    teacher = AutoModelForCausalLM.from_pretrained(ckpt.path, dtype=torch.float32, attn_implementation="eager")
    student = build_student(teacher, [0, 1, 2, 3, 4, 7])
    assert student.config.layer_types == ["sliding_attention"] * 6
    student.save_pretrained(tmp_path / "student")
    ckpt.hf_tokenizer.save_pretrained(tmp_path / "student")
    gguf = convert_checkpoint(tmp_path / "student", tmp_path / "student.gguf", outtype="f32").output
    ids = ckpt.encode(" ".join(TEXTS[:4]))
    assert len(ids) > 4 * SLIDING_WINDOW
    with torch.no_grad():
        want = student(torch.tensor([ids])).logits[0].numpy()
    llm = load_llama(gguf)
    try:
        got = llama_logits(llm, ids)
    finally:
        llm.close()
    err = relative_error(got, want)
    print(f"gemma3 subset: max relative logit error {err:.2e} over {len(ids)} positions")
    assert err <= 1e-3 and (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.slow
def test_a_narrower_mlp_keeps_the_channels_the_data_uses(teacher, train_text: Path, held_text: Path) -> None:
    """Keeping every channel changes nothing; keeping the most active half stays closer to the
    teacher than keeping the least active half (the criterion picks what matters)."""
    import torch
    from transformers import AutoModelForCausalLM

    from convert.distill.data import load_examples, make_blocks
    from convert.distill.narrow_mlp import channel_importance, keep_channels, narrow_mlp
    from convert.distill.tokenizers import load_tokenizer
    from convert.distill.train import divergence_to_teacher

    tok = load_tokenizer(teacher.path)
    model = AutoModelForCausalLM.from_pretrained(teacher.path, dtype=torch.float32, attn_implementation="eager")
    blocks = make_blocks(load_examples(train_text, tok), 32, pack=True, pad_id=tok.pad_token_id)
    held = make_blocks(load_examples(held_text, tok), 32, pack=True, pad_id=tok.pad_token_id)
    width = model.config.intermediate_size
    whole = build_student(model, [0, 1, 2, 3])
    narrow_mlp(whole, width, blocks)
    assert divergence_to_teacher(whole, model, held) < 1e-9

    most, least = build_student(model, [0, 1, 2, 3]), build_student(model, [0, 1, 2, 3])
    narrow_mlp(most, width // 2, blocks)
    keep_channels(least, [score.argsort()[:width // 2].sort().values for score in channel_importance(least, blocks)])
    assert most.config.intermediate_size == width // 2 == most.model.layers[0].mlp.down_proj.in_features
    kld_most, kld_least = divergence_to_teacher(most, model, held), divergence_to_teacher(least, model, held)
    print(f"half the FFN channels: KLD {kld_most:.4f} (most active) vs {kld_least:.4f} (least active)")
    assert kld_most < kld_least
    with pytest.raises(EdgeAIError, match=f"--intermediate-size {width + 1} is out of range"):
        narrow_mlp(most, width + 1, blocks)
