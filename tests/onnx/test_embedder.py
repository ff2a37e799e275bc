"""The runtime embedder (onnxruntime + tokenizers, no torch) against sentence-transformers' recipe in
PyTorch on 100 sentences, fp32 and int8, and search by meaning with it."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SUBJECTS = ["The committee", "My neighbour", "A small robot", "The new laptop", "Our train", "The river",
            "An old fisherman", "The compiler", "Grandma's recipe", "The football team"]
PREDICATES = ["was delayed by heavy snow this morning.", "needs more memory than we expected.",
              "won the championship after a dramatic final!", "is surprisingly easy to follow, isn't it?",
              "flooded the valley in 1993 and again last spring.", "crashed with error code 0x80070005.",
              "tastes better with fresh basil and a pinch of salt.", "told stories about the sea until midnight.",
              "approved the budget for 2025 by a narrow vote.", "works offline, so nothing leaves the device."]
SENTENCES = [f"{s} {p}" for s, p in itertools.product(SUBJECTS, PREDICATES)]  # 100, varied length and tokens


def _pytorch_embeddings(src: Path, texts: list[str]) -> np.ndarray:
    """sentence-transformers' all-MiniLM-L6-v2: mean pooling under the mask, then L2 normalisation."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src)
    model = AutoModel.from_pretrained(src).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(mean, dim=1).numpy()


@pytest.fixture(scope="module")
def reference(minilm_src: Path) -> np.ndarray:
    return _pytorch_embeddings(minilm_src, SENTENCES)


@pytest.mark.slow
@pytest.mark.parametrize(("quantize", "min_mean", "min_min"), [("none", 0.999, 0.999), ("int8", 0.99, 0.98)])
def test_embeddings_match_pytorch(minilm_onnx, reference: np.ndarray, quantize: str, min_mean: float,
                                  min_min: float) -> None:
    from runtime.embedder import Embedder

    folder, _ = minilm_onnx(quantize)
    got = Embedder(folder).embed(SENTENCES)
    cos = (got * reference).sum(1)
    print(f"{quantize}: cosine vs PyTorch over {len(cos)} sentences: mean {cos.mean():.5f} min {cos.min():.5f}")
    assert got.shape == (100, 384) and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cos.mean() >= min_mean and cos.min() >= min_min


@pytest.mark.slow
def test_search_by_meaning_finds_paraphrases(minilm_onnx) -> None:
    from runtime.embedder import Embedder, rank

    embedder = Embedder(minilm_onnx("int8")[0])
    notes = ["Book a table for two at the Italian place on Friday", "The printer on floor 3 is out of toner",
             "Remember to water the tomatoes every evening", "Flight to Lisbon departs 7:40 from gate B12",
             "Quarterly revenue grew 12 percent year over year"]
    vectors = embedder.embed(notes)
    queries = {"when does my plane leave": 3, "dinner reservation": 0, "garden plants need watering": 2,
               "sales went up": 4, "ink cartridge empty": 1}
    for query, expected in queries.items():
        order, scores = rank(embedder.embed([query])[0], vectors)
        assert order[0] == expected, (query, [notes[i] for i in order], scores)
        assert scores[0] > scores[1]
    # a text's vector does not depend on the texts embedded with it (int8 activations are scaled per batch)
    single = np.stack([embedder.embed([n])[0] for n in reversed(notes)])[::-1]
    np.testing.assert_allclose(single, vectors, atol=1e-6)


@pytest.mark.slow
def test_embedder_never_imports_torch(minilm_onnx) -> None:
    folder, _ = minilm_onnx("int8")
    code = ("import sys; from pathlib import Path; from runtime.embedder import Embedder; "
            f"Embedder(Path({str(folder)!r})).embed(['hello']); "
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
