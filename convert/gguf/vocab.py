"""Tokenizer files -> GGUF tokenizer metadata.

Two vocabulary kinds, chosen from the files present:
- byte-level BPE (`tokenizer.json`: a BPE model without byte fallback, with ByteLevel steps; a
  Metaspace one converts from the `tokenizer.model` beside it) -> llama.cpp "gpt2":
  tokens, merges, token types and the pre-tokenizer (see pretokenizer.py);
- SentencePiece (`tokenizer.model`) -> llama.cpp "llama": pieces, scores, types and the
  normalizer flags.
Both get: padding to the model's vocabulary size with UNUSED `[PAD{id}]` tokens, added tokens
(special ones as CONTROL, others USER_DEFINED; SentencePiece ones beyond the embedding left
out), BOS/EOS/UNK/PAD/SEP/EOT ids, add-BOS/EOS flags (tokenizer_config.json first, then
tokenizer.json's post-processor) and the chat template
(chat_template.jinja, else tokenizer_config.json, else chat_template.json).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
from gguf import TokenType

from convert.gguf.checkpoint import read_json
from convert.gguf.hparams import ModelConfig
from convert.gguf.pretokenizer import infer_pre_tokenizer
from convert.gguf.spm_model import read_spm_model
from edge_ai.errors import EdgeAIError

SPECIAL_KINDS = ("bos", "eos", "unk", "pad", "sep")
# Turn-end tokens of the common chat formats (Llama 3, ChatML, Phi-3, Gemma), first match wins.
EOT_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>")
_PAD_SCORE = -1000.0


@dataclass
class Vocabulary:
    model: str  # llama.cpp tokenizer model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str  # llama.cpp pre-tokenizer
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    special: dict[str, int] = field(default_factory=dict)  # "bos" -> id, ...
    add_bos: bool | None = None
    add_eos: bool | None = None
    add_space_prefix: bool | None = None
    remove_extra_whitespaces: bool | None = None
    chat_template: str | list[dict[str, str]] | None = None
    warnings: list[str] = field(default_factory=list)

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges:
            writer.add_token_merges(self.merges)
        for kind, token_id in self.special.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        if self.add_bos is not None:
            writer.add_add_bos_token(self.add_bos)
        if self.add_eos is not None:
            writer.add_add_eos_token(self.add_eos)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if self.remove_extra_whitespaces is not None:
            writer.add_remove_extra_whitespaces(self.remove_extra_whitespaces)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def load_vocabulary(src: Path, config: ModelConfig, n_vocab: int) -> Vocabulary:
    """Read the tokenizer files of `src` for a model whose embedding has `n_vocab` rows."""
    tokenizer_json = _optional_json(src / "tokenizer.json", "tokenizer")
    tokenizer_config = _optional_json(src / "tokenizer_config.json", "tokenizer config") or {}
    if not isinstance(tokenizer_config, dict):
        raise EdgeAIError(f"{src / 'tokenizer_config.json'} is not a JSON object; re-download it")
    if tokenizer_json is not None and not isinstance(tokenizer_json, dict):
        raise EdgeAIError(f"{src / 'tokenizer.json'} is not a JSON object; re-download it")
    bpe_model = (tokenizer_json or {}).get("model") or {}

    has_spm = (src / "tokenizer.model").is_file()
    if bpe_model.get("type") == "BPE" and not bpe_model.get("byte_fallback", False) \
            and (_is_byte_level(tokenizer_json) or not has_spm):
        vocab = _byte_level_bpe(src, tokenizer_json, n_vocab)
    elif has_spm:
        vocab = _sentencepiece(src, tokenizer_json, tokenizer_config, n_vocab)
    elif tokenizer_json is not None:
        kind = bpe_model.get("type", "unknown")
        detail = " with byte fallback" if bpe_model.get("byte_fallback") else ""
        raise EdgeAIError(f"{src / 'tokenizer.json'} is a {kind} tokenizer{detail}, which needs its tokenizer.model "
                          "to convert; add the model's tokenizer.model")
    else:
        raise EdgeAIError(f"no tokenizer in {src}: expected tokenizer.json or tokenizer.model; "
                          "download the model's tokenizer files")

    _special_tokens(vocab, src, tokenizer_json, tokenizer_config, config)
    vocab.chat_template = _chat_template(src, tokenizer_config)
    return vocab


def _is_byte_level(tokenizer_json: Any) -> bool:
    """GPT-2-style BPE: a ByteLevel step in the pre-tokenizer or decoder. A BPE tokenizer.json
    without one (Metaspace, as some SentencePiece exports are) is converted from tokenizer.model."""
    def types(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                yield node["type"]
            for child in node.values():
                yield from types(child)
        elif isinstance(node, list):
            for child in node:
                yield from types(child)

    steps = (kind for part in ("pre_tokenizer", "decoder") for kind in types(tokenizer_json.get(part)))
    return "ByteLevel" in steps


def _optional_json(path: Path, what: str) -> Any:
    if not path.is_file():
        return None
    return read_json(path, what=what, missing_hint="re-download it")


def _bad_tokenizer(path: Path, why: str) -> EdgeAIError:
    return EdgeAIError(f"{path} is not a usable tokenizer ({why}); re-download it")


def _looks_special(text: str) -> bool:
    return (text.startswith("<|") and text.endswith("|>")) or (text.startswith("<｜") and text.endswith("｜>"))


def _byte_level_bpe(src: Path, tj: dict[str, Any], n_vocab: int) -> Vocabulary:
    path = src / "tokenizer.json"
    model = tj["model"]
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise _bad_tokenizer(path, "model.vocab is missing")
    by_id: dict[int, str] = {}
    for text, token_id in vocab.items():
        if not isinstance(token_id, int) or token_id < 0:
            raise _bad_tokenizer(path, f"token {text!r} has id {token_id!r}")
        by_id[token_id] = text
    added: dict[int, dict[str, Any]] = {}
    for entry in tj.get("added_tokens") or []:
        token_id, content = entry.get("id"), entry.get("content")
        if not isinstance(token_id, int) or token_id < 0 or not isinstance(content, str):
            raise _bad_tokenizer(path, f"bad added token {entry!r}")
        by_id[token_id] = content
        added[token_id] = entry
    _check_fits(path, max(by_id), n_vocab)

    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            special = added[i].get("special", False) or _looks_special(by_id[i])
            types.append(TokenType.CONTROL if special else TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)

    merges = _merges(path, model.get("merges") or [])
    pre, how = infer_pre_tokenizer(tj, path)
    if pre is None:
        raise EdgeAIError(f"unknown BPE pre-tokenizer in {path} ({how}); llama.cpp would split text differently "
                          "from the model, so it is not converted")
    return Vocabulary(model="gpt2", pre=pre, tokens=tokens, types=[int(t) for t in types], merges=merges)


def _merges(path: Path, merges: list[Any]) -> list[str]:
    out: list[str] = []
    for merge in merges:
        if isinstance(merge, str):
            out.append(merge)
        elif isinstance(merge, list) and len(merge) == 2 and all(isinstance(p, str) for p in merge):
            # transformers >= 4.45 stores pairs so parts may contain spaces; GGUF uses "a b" with
            # spaces written as the byte-level stand-in U+0120 (as llama.cpp's converter does).
            out.append(" ".join(part.replace(" ", "\u0120") for part in merge))
        else:
            raise _bad_tokenizer(path, f"merge {merge!r} is neither 'a b' nor ['a', 'b']")
    return out


def _check_fits(path: Path, max_id: int, n_vocab: int) -> None:
    if max_id >= n_vocab:
        raise EdgeAIError(f"{path.name} has token id {max_id} but the model's embedding has only {n_vocab} rows; "
                          "the tokenizer does not belong to this model")


def _sentencepiece(src: Path, tj: dict[str, Any] | None, tokenizer_config: dict[str, Any],
                   n_vocab: int) -> Vocabulary:
    path = src / "tokenizer.model"
    spm = read_spm_model(path)
    _check_fits(path, len(spm.pieces) - 1, n_vocab)
    tokens = list(spm.pieces) + [f"[PAD{i}]" for i in range(len(spm.pieces), n_vocab)]
    scores = list(spm.scores) + [_PAD_SCORE] * (n_vocab - len(spm.pieces))
    types = list(spm.types) + [int(TokenType.UNUSED)] * (n_vocab - len(spm.pieces))

    beyond: list[str] = []
    for token_id, content, special in _added_tokens(src, tj, tokenizer_config):
        if token_id >= n_vocab:
            beyond.append(f"{content!r} ({token_id})")
            continue
        if token_id >= len(spm.pieces):
            tokens[token_id] = content
            scores[token_id] = _PAD_SCORE
            types[token_id] = int(TokenType.CONTROL if special or _looks_special(content) else TokenType.USER_DEFINED)
        elif special and tokens[token_id] == content and types[token_id] in (TokenType.NORMAL,
                                                                              TokenType.USER_DEFINED):
            # tokenizer_config says special (Gemma's <start_of_turn> is USER_DEFINED in the SPM model):
            # CONTROL, as llama.cpp's converter does, so chat markers never print or match user text
            types[token_id] = int(TokenType.CONTROL)

    vocab = Vocabulary(model="llama", pre="default", tokens=tokens, types=types, scores=scores,
                       add_space_prefix=spm.add_dummy_prefix,
                       remove_extra_whitespaces=spm.remove_extra_whitespaces)
    if beyond:
        # Gemma 3 1B / 270M: the family's tokenizer adds <image_soft_token> (262144) to 262144 rows.
        # The model has no embedding for it, so (as llama.cpp's converter does) it is left out.
        vocab.warnings.append(f"added token(s) {', '.join(beyond)} left out: beyond the model's {n_vocab} "
                              "embedding rows, so the model cannot use them")
    if spm.precompiled_charsmap and spm.normalizer_name not in ("", "identity"):
        vocab.warnings.append(f"tokenizer.model normalizes text ({spm.normalizer_name}), which llama.cpp does not; "
                              "text that is not already normalized may tokenize differently")
    for kind, token_id in (("unk", spm.unk_id), ("bos", spm.bos_id), ("eos", spm.eos_id), ("pad", spm.pad_id)):
        if 0 <= token_id < len(spm.pieces):
            vocab.special.setdefault(kind, token_id)  # fallback; tokenizer_config.json overrides below
    return vocab


def _added_tokens(src: Path, tj: dict[str, Any] | None, tokenizer_config: dict[str, Any]):
    """(id, content, special) of tokens added on top of a SentencePiece model."""
    seen: dict[int, tuple[str, bool]] = {}
    for entry in (tj or {}).get("added_tokens") or []:
        if isinstance(entry.get("id"), int) and isinstance(entry.get("content"), str):
            seen[entry["id"]] = (entry["content"], bool(entry.get("special", False)))
    decoder = tokenizer_config.get("added_tokens_decoder") or {}
    if isinstance(decoder, dict):
        for key, entry in decoder.items():
            if str(key).isdigit() and isinstance(entry, dict) and isinstance(entry.get("content"), str):
                seen.setdefault(int(key), (entry["content"], bool(entry.get("special", False))))
    added_json = _optional_json(src / "added_tokens.json", "added tokens")
    if isinstance(added_json, dict):
        for content, token_id in added_json.items():
            if isinstance(token_id, int):
                seen.setdefault(token_id, (content, _looks_special(content)))
    for token_id in sorted(seen):
        if token_id >= 0:
            yield token_id, *seen[token_id]


def _token_text(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


def _special_tokens(vocab: Vocabulary, src: Path, tj: dict[str, Any] | None,
                    tokenizer_config: dict[str, Any], config: ModelConfig) -> None:
    ids: dict[str, int] = {}
    for i, text in enumerate(vocab.tokens):
        if vocab.types[i] != TokenType.UNUSED:
            ids.setdefault(text, i)
    texts: dict[str, str] = {}
    # 1. tokenizer_config.json names the tokens by text
    for kind in SPECIAL_KINDS:
        text = _token_text(tokenizer_config.get(f"{kind}_token"))
        if text is not None and text in ids:
            vocab.special[kind] = ids[text]
            texts[kind] = text
    # 2. config.json / generation_config.json give ids
    generation = _optional_json(src / "generation_config.json", "generation config") or {}
    for kind in SPECIAL_KINDS:
        if kind in texts:
            continue
        value = config.get(f"{kind}_token_id")
        if value is None and isinstance(generation, dict):
            value = generation.get(f"{kind}_token_id")
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(vocab.tokens):
            vocab.special[kind] = value
    for text in EOT_TOKENS:
        if text in ids:
            vocab.special["eot"] = ids[text]
            break

    add_bos, add_eos = _post_processor_flags(tj, vocab)
    if vocab.model == "llama":  # SentencePiece tokenizers add BOS unless told otherwise
        add_bos = True if add_bos is None else add_bos
    # tokenizer_config.json's flags win, as in llama.cpp's converter and transformers 4's Llama/Gemma
    # tokenizers (which rebuild the post-processor from them; transformers 5 reads only tokenizer.json)
    for kind in ("bos", "eos"):
        flag = tokenizer_config.get(f"add_{kind}_token")
        if isinstance(flag, bool):
            if kind == "bos":
                add_bos = flag
            else:
                add_eos = flag
    vocab.add_bos = bool(add_bos)
    vocab.add_eos = bool(add_eos)
    if vocab.add_bos and "bos" not in vocab.special:
        raise EdgeAIError(f"the tokenizer in {src} adds a BOS token but names none that is in its vocabulary; "
                          "fix bos_token in tokenizer_config.json")


def _post_processor_flags(tj: dict[str, Any] | None, vocab: Vocabulary) -> tuple[bool | None, bool | None]:
    """Whether tokenizer.json's post-processor puts BOS first / EOS last on a single sequence."""
    post = (tj or {}).get("post_processor")
    if not isinstance(post, dict):
        return None, None
    steps = post.get("processors") if post.get("type") == "Sequence" else [post]
    add_bos = add_eos = None
    for step in steps or []:
        kind = step.get("type") if isinstance(step, dict) else None
        if kind in ("RobertaProcessing", "BertProcessing"):
            return True, True
        if kind != "TemplateProcessing":
            continue
        single = step.get("single") or []
        add_bos = add_eos = False
        if single and "SpecialToken" in single[0]:
            first = single[0]["SpecialToken"].get("id")
            bos = vocab.special.get("bos")
            if bos is not None and vocab.tokens[bos] == first:
                add_bos = True
            elif bos is None and first in vocab.tokens:  # the template's first token is the BOS
                vocab.special["bos"] = vocab.tokens.index(first)
                add_bos = True
            else:
                vocab.warnings.append(f"tokenizer.json starts sequences with {first!r}, which is not the BOS "
                                      "token; llama.cpp will not add it")
        if len(single) > 1 and "SpecialToken" in single[-1]:
            last = single[-1]["SpecialToken"].get("id")
            add_eos = last is not None and vocab.special.get("eos") is not None \
                and vocab.tokens[vocab.special["eos"]] == last
    return add_bos, add_eos


def _chat_template(src: Path, tokenizer_config: dict[str, Any]) -> str | list[dict[str, str]] | None:
    """The chat template transformers would use: chat_template.jinja wins over tokenizer_config.json
    (a model updated with a new .jinja often keeps the stale copy in its config), then the
    processors' legacy chat_template.json."""
    template = None
    if (src / "chat_template.jinja").is_file():
        try:
            template = (src / "chat_template.jinja").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EdgeAIError(f"cannot read {src / 'chat_template.jinja'}: {exc}; re-download it") from exc
    if template is None:
        template = tokenizer_config.get("chat_template")
    if template is None:
        data = _optional_json(src / "chat_template.json", "chat template")
        if isinstance(data, dict):
            template = data.get("chat_template")
    if isinstance(template, list):
        named = [t for t in template if isinstance(t, dict) and isinstance(t.get("name"), str)
                 and isinstance(t.get("template"), str)]
        return named or None
    return template if isinstance(template, str) and template.strip() else None
