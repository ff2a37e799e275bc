"""Which llama.cpp BPE pre-tokenizer (`tokenizer.ggml.pre`) a tokenizer.json needs.

llama.cpp's own converter identifies the pre-tokenizer by hashing the token ids of a fixed text and
refuses every vocabulary whose hash it has not seen, even when the splitting rules are the usual
ones. Here the rules themselves are read from tokenizer.json's `pre_tokenizer` (a ByteLevel
pre-tokenizer, or Split regexes followed by a regex-less ByteLevel) and looked up in
`PRE_BY_SPLITS`; only when that fails is the id hash tried against `PRE_BY_HASH` (hashes
published by llama.cpp's convert_hf_to_gguf_update.py, for tokenizers with unusual rules).
Every name used here is one that llama.cpp 0.3.36 accepts (tests/convert checks by loading).
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path
from typing import Any

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# The sequence of split rules (regexes, in order) -> llama.cpp pre-tokenizer name.
PRE_BY_SPLITS: dict[tuple[str, ...], str] = {
    (GPT2_REGEX,): "gpt-2",
    (LLAMA3_REGEX,): "llama-bpe",
    (QWEN2_REGEX,): "qwen2",
    (r"\p{N}", GPT2_REGEX): "smollm",  # Digits(individual) then ByteLevel(use_regex)
}

# Normalizers that do not change how llama.cpp's pre-tokenizers see typical text.
_HARMLESS_NORMALIZERS = (None, "NFC")

# llama.cpp's hash text: sha256(str(token ids of CHKTXT, with special tokens)) identifies a tokenizer.
CHKTXT = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ '
          '🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
          '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
          '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')

PRE_BY_HASH: dict[str, str] = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Meta-Llama-3
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / Qwen2
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3-Embedding
    "d30d75d9059f1aa2c19359de71047b3ae408c70875e8a3ccf8c5fba56c9d8af4": "qwen35",  # Qwen3.5
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5": "deepseek-v3",
    "8aeee3860c56296a157a1fe2fad249ec40aa59b1bb5709f4ade11c4e6fe652ed": "falcon",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "olmo",  # also mpt-7b
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",
    "9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8": "command-r",
    "a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e": "dbrx",
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "c7ea5862a53e4272c035c8238367063e2b270d51faa48c0f09e9d5b54746c360": "poro-chat",
    "7fc505bd3104ca1083b150b17d088b59534ede9bde81f0dd2090967d7fe52cee": "viking",
    "b53802fb28e26d645c3a310b34bfe07da813026ec7c7716883404d5e0f8b1901": "jais",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral-Nemo
    "3c30d3ad1d6b64202cd222813e7736c2db6e1bd6d67197090fc1211fbc612ae7": "bloom",
    "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae": "exaone",
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",
    "60824e3c0d9401f89943cbb2fff727f0e2d4c545ba4df2d6e4f09a6db0f5b450": "chameleon",
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",
    "7dec86086fcc38b66b7bc1575a160ae21cf705be7718b9d5598190d7c12db76f": "superbpe",
    "1994ffd01900cfb37395608534236ecd63f2bd5995d6cb1004dda1af50240f15": "trillion",
    "96a5f08be6259352137b512d4157e333e21df7edd3fcd152990608735a65b224": "bailingmoe",
    "d353350c764d8c3b39c763113960e4fb4919bea5fbf208a0e3b22e8469dc7406": "llama4",
    "0e9433cbbb161f89e264eb32e8e64bfe69e834973ffca5d41d3948a604a3e2a3": "pixtral",
    "d5f1dd6f980fec569fb218a81a7658ac45fc56b38c5a0adeb1c232fbe04ef5ec": "seed-coder",
    "1431a23e583c97432bc230bff598d103ddb5a1f89960c8f1d1051aaa944d0b35": "minerva-7b",
    "7e57df22b1fe23a7b1e1c7f3dc4e3f96d43a4eb0836d0c6bdc3436d7b2f1c664": "hunyuan",
    "bba3b3366b646dbdded5dbc42d59598b849371afc42f7beafa914afaa5b70aa6": "hunyuan-dense",
    "81212dc7cdb7e0c1074ca62c5aeab0d43c9f52b8a737be7b12a777c953027890": "kimi-k2",
    "66b8d4e19ab16c3bfd89bce5d785fb7e0155e8648708a1f42077cb9fe002c273": "grok-2",
    "a1336059768a55c99a734006ffb02203cd450fed003e9a71886c88acf24fdbc2": "glm4",
    "9ca2dd618e8afaf09731a7cf6e2105b373ba6a1821559f258b272fe83e6eb902": "glm4",
    "b6e8e1518dc4305be2fe39c313ed643381c4da5db34a98f6a04c093f8afbe99b": "chatglm-bpe",
    "81d72c7348a9f0ebe86f23298d37debe0a5e71149e29bd283904c02262b27516": "chatglm-bpe",
}


def split_rules(tokenizer_json: dict[str, Any]) -> tuple[str, ...] | None:
    """The pre-tokenizer's split regexes in order, or None when its shape is not one we can read.

    Accepted shapes: ByteLevel(use_regex=true) alone (the GPT-2 regex), or a Sequence of
    Split(Regex, behavior=Isolated, invert=false) / Digits steps ending in ByteLevel(use_regex=false
    or true). ByteLevel must not add a prefix space, and the normalizer must be absent or NFC.
    """
    normalizer = tokenizer_json.get("normalizer")
    if (normalizer or {}).get("type") not in _HARMLESS_NORMALIZERS:
        return None
    pre = tokenizer_json.get("pre_tokenizer")
    if not isinstance(pre, dict):
        return None
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    if not isinstance(steps, list) or not steps:
        return None
    rules: list[str] = []
    for i, step in enumerate(steps):
        kind = step.get("type") if isinstance(step, dict) else None
        last = i == len(steps) - 1
        if kind == "ByteLevel":
            if not last or step.get("add_prefix_space", False):
                return None
            if step.get("use_regex", True):
                rules.append(GPT2_REGEX)
        elif kind == "Split":
            pattern = step.get("pattern") or {}
            regex = pattern.get("Regex")
            if not isinstance(regex, str) or step.get("behavior") != "Isolated" or step.get("invert", False):
                return None
            rules.append(regex)
        elif kind == "Digits":
            rules.append(r"\p{N}" if step.get("individual_digits") else r"\p{N}+")
        else:
            return None
    if steps[-1].get("type") != "ByteLevel":
        return None
    return tuple(rules)


def token_hash(tokenizer_file: Path) -> str | None:
    """llama.cpp's chkhsh of a tokenizer.json, or None if `tokenizers` cannot load it."""
    try:
        from tokenizers import Tokenizer
        ids = Tokenizer.from_file(str(tokenizer_file)).encode(CHKTXT).ids
    except Exception:  # the tokenizers library raises a bare Exception for unusual files
        return None
    return sha256(str(ids).encode()).hexdigest()


def infer_pre_tokenizer(tokenizer_json: dict[str, Any], tokenizer_file: Path) -> tuple[str | None, str]:
    """(llama.cpp pre-tokenizer name or None, how it was found / why not)."""
    rules = split_rules(tokenizer_json)
    if rules is not None and rules in PRE_BY_SPLITS:
        return PRE_BY_SPLITS[rules], "pre_tokenizer rules"
    digest = token_hash(tokenizer_file)
    if digest is not None and digest in PRE_BY_HASH:
        return PRE_BY_HASH[digest], "token hash"
    shown = json.dumps(tokenizer_json.get("pre_tokenizer"), ensure_ascii=False)
    if len(shown) > 160:
        shown = shown[:157] + "..."
    return None, shown
