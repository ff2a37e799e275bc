"""A GGUF file as the teacher (the default gemma3-270m ships only as GGUF).

transformers dequantizes the GGUF into a float32 model for training. Its tokenizer, though, comes
back without a SentencePiece `tokenizer.model` (save_pretrained even copies the GGUF under that
name), and our converter needs the real one for SentencePiece vocabularies. The GGUF holds every
piece, score and type, so the model file is rebuilt from them: the shipped student then has the
teacher's exact vocabulary, which the evaluator checks token by token.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from edge_ai.errors import EdgeAIError

SPM_FILE = "tokenizer.model"


def load_gguf_teacher(path: Path) -> tuple[Any, Any]:
    """(tokenizer, float32 model) transformers builds from the GGUF file `path`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # transformers draws an unconditional tqdm bar while dequantizing: keep it off the terminal
        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise EdgeAIError(f"transformers cannot load {path.name} as a teacher ({str(exc).splitlines()[0]}); "
                          "use its Hugging Face checkpoint folder instead") from None
    return tokenizer, model


def write_spm_model(gguf_path: Path, folder: Path) -> None:
    """Replace `folder/tokenizer.model` by the SentencePiece model the GGUF's vocabulary describes
    (or remove the stray copy when the GGUF's vocabulary is not SentencePiece)."""
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as pb

    reader = gguf.GGUFReader(gguf_path)

    def value(key: str, default: Any = None) -> Any:
        field = reader.get_field(key)
        return default if field is None else field.contents()

    target = folder / SPM_FILE
    target.unlink(missing_ok=True)
    if value("tokenizer.ggml.model") != "llama":
        return  # BPE vocabularies convert from tokenizer.json alone
    proto = pb.ModelProto()
    types = value("tokenizer.ggml.token_type")
    for piece, score, kind in zip(value("tokenizer.ggml.tokens"), value("tokenizer.ggml.scores"), types):
        entry = proto.pieces.add()
        entry.piece, entry.score, entry.type = piece, score, kind  # gguf.TokenType numbers are SentencePiece's
    spec = proto.trainer_spec
    spec.model_type = pb.TrainerSpec.BPE
    spec.byte_fallback = pb.ModelProto.SentencePiece.BYTE in types
    spec.unk_id = value("tokenizer.ggml.unknown_token_id", 0)
    spec.bos_id = value("tokenizer.ggml.bos_token_id", -1)
    spec.eos_id = value("tokenizer.ggml.eos_token_id", -1)
    spec.pad_id = value("tokenizer.ggml.padding_token_id", -1)
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = bool(value("tokenizer.ggml.add_space_prefix", True))
    norm.remove_extra_whitespaces = False
    target.write_bytes(proto.SerializeToString())
