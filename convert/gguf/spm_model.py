"""Read a SentencePiece `tokenizer.model` (a serialized ModelProto) without protobuf.

Only what GGUF needs: every piece with its score and type, the normalizer flags llama.cpp honours
(`add_dummy_prefix`, `remove_extra_whitespaces`) and the trainer's special ids. The wire format
is small: varint keys (field << 3 | wire type); the fields below follow
sentencepiece_model.proto. Piece types use the same numbers as gguf.TokenType.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from edge_ai.errors import EdgeAIError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass
class SpmModel:
    pieces: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    model_type: int = 1  # 1 unigram, 2 bpe, 3 word, 4 char
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True


class _ProtoError(ValueError):
    pass


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of one message; LEN values are bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _LEN:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise _ProtoError("length past the end")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == _I32:
            if pos + 4 > end:
                raise _ProtoError("truncated fixed32")
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == _I64:
            if pos + 8 > end:
                raise _ProtoError("truncated fixed64")
            value, pos = buf[pos:pos + 8], pos + 8
        else:
            raise _ProtoError(f"unsupported wire type {wire}")
        yield number, wire, value


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _ProtoError("bad varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _int32(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_spm_model(data: bytes) -> SpmModel:
    model = SpmModel()
    for number, wire, value in _fields(data):
        if number == 1 and wire == _LEN:  # SentencePiece
            piece, score, kind = "", 0.0, NORMAL
            for n, w, v in _fields(value):
                if n == 1 and w == _LEN:
                    piece = v.decode("utf-8")
                elif n == 2 and w == _I32:
                    score = struct.unpack("<f", v)[0]
                elif n == 3 and w == _VARINT:
                    kind = v
            model.pieces.append(piece)
            model.scores.append(score)
            model.types.append(kind)
        elif number == 2 and wire == _LEN:  # TrainerSpec
            for n, w, v in _fields(value):
                if w != _VARINT:
                    continue
                if n == 3:
                    model.model_type = v
                elif n == 35:
                    model.byte_fallback = bool(v)
                elif n == 40:
                    model.unk_id = _int32(v)
                elif n == 41:
                    model.bos_id = _int32(v)
                elif n == 42:
                    model.eos_id = _int32(v)
                elif n == 43:
                    model.pad_id = _int32(v)
        elif number == 3 and wire == _LEN:  # NormalizerSpec
            for n, w, v in _fields(value):
                if n == 1 and w == _LEN:
                    model.normalizer_name = v.decode("utf-8", "replace")
                elif n == 2 and w == _LEN:
                    model.precompiled_charsmap = bytes(v)
                elif n == 3 and w == _VARINT:
                    model.add_dummy_prefix = bool(v)
                elif n == 4 and w == _VARINT:
                    model.remove_extra_whitespaces = bool(v)
    if not model.pieces:
        raise _ProtoError("no pieces")
    if any(t not in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE) for t in model.types):
        raise _ProtoError("unknown piece type")
    return model


def read_spm_model(path: Path) -> SpmModel:
    """Parse `path` or raise a one-line EdgeAIError naming it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EdgeAIError(f"cannot read {path}: {exc.strerror}; check the tokenizer file") from exc
    try:
        return parse_spm_model(data)
    except (_ProtoError, UnicodeDecodeError, struct.error) as exc:
        raise EdgeAIError(f"{path} is not a valid SentencePiece model ({exc}); re-download it") from None
