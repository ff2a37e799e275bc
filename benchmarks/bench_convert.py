"""HF safetensors -> GGUF conversion: throughput and peak memory; prints JSON.

Writes a random ~500 MB Llama-shaped checkpoint (float16 safetensors in 2+ shards, a small locally
trained tokenizer padded to a 32k vocabulary) into a temp dir, then converts it in a child process
and reads the child's own peak RSS (VmHWM in /proc/self/status; getrusage's ru_maxrss would also
count the parent's pages the child held between fork and exec). A first child does everything but
read weights (imports, config.json completed by transformers in a torch-free child, the tensor plan,
the tokenizer): its peak is the fixed cost, the baseline the tensor streaming adds to.

Targets: peak RSS < 1.5 x the largest shard (the issue's target), and the converter's own memory
growth (peak RSS minus that baseline) at most 3 x the largest tensor (f16/bf16 output; the tensor,
its encoded copy and slack; 4 x for f32): it streams one tensor at a time, so memory follows the
largest tensor, not the model or a shard. The shard target alone would
pass a converter that read a whole shard at once (about 1 x the shard plus the baseline) whenever
shards are large next to the baseline; the tensor target would not.
Assert-free: `meets_target` is both.

Side by side with llama.cpp's own converter (`vs_llama_cpp`, unless --pairs 0): the same checkpoint
and outtype converted by `edge-ai convert gguf` and by llama.cpp's convert_hf_to_gguf.py (from
llama-cpp-python's source distribution, vendor/llama.cpp: --llama-cpp names that folder or the
.tar.gz, else `pip download` fetches it), in alternating runs, each a whole process measured from
outside (wall time; peak RSS of it and its children from wait4). llama.cpp's script refuses a
vocabulary its pre-tokenizer table has not seen, so a local copy is patched to call this one
"llama-bpe" (what it is: the Llama-3 split regex). Target: median wall-time and peak-memory
ratios (ours / llama.cpp's) both <= 1.0.

    python benchmarks/bench_convert.py [--size-mb 500] [--shards 2] [--outtype f16] [--keep DIR]
                                       [--pairs 3] [--llama-cpp PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_RATIO = 1.5  # peak RSS / largest shard
# (peak RSS - baseline) / largest tensor: the tensor as read, its encoded copy, one more tensor of
# slack; 3 for f16/bf16, 4 for f32 (whose output alone is twice the f16 input)
OUT_BYTES_PER_VALUE = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}


def tensor_target_ratio(outtype: str) -> float:
    return 2.0 + OUT_BYTES_PER_VALUE[outtype] / 2  # the checkpoint is float16: 2 bytes per value
HIDDEN, FF, HEADS, KV_HEADS, VOCAB = 1024, 2816, 16, 4, 32000


def llama_tensors(n_layer: int) -> list[tuple[str, tuple[int, ...]]]:
    kv = HIDDEN // HEADS * KV_HEADS
    names = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(n_layer):
        p = f"model.layers.{i}."
        names += [(p + "input_layernorm.weight", (HIDDEN,)),
                  (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
                  (p + "self_attn.k_proj.weight", (kv, HIDDEN)),
                  (p + "self_attn.v_proj.weight", (kv, HIDDEN)),
                  (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
                  (p + "post_attention_layernorm.weight", (HIDDEN,)),
                  (p + "mlp.gate_proj.weight", (FF, HIDDEN)),
                  (p + "mlp.up_proj.weight", (FF, HIDDEN)),
                  (p + "mlp.down_proj.weight", (HIDDEN, FF))]
    return names + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def write_safetensors(path: Path, tensors: list[tuple[str, tuple[int, ...]]], rng: np.random.Generator) -> None:
    """Stream random float16 tensors into one safetensors file (one tensor in memory at a time)."""
    header, offset = {}, 0
    for name, shape in tensors:
        nbytes = int(np.prod(shape)) * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _, shape in tensors:
            scale = 1.0 if len(shape) == 1 else shape[-1] ** -0.5
            f.write((rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float16).tobytes())


def make_checkpoint(root: Path, size_mb: float, n_shards: int) -> dict:
    per_layer = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * HIDDEN // HEADS * KV_HEADS + 3 * HIDDEN * FF + 2 * HIDDEN
    n_layer = max(1, round((size_mb * 1e6 / 2 - 2 * VOCAB * HIDDEN) / per_layer))
    tensors = llama_tensors(n_layer)
    total = sum(int(np.prod(s)) * 2 for _, s in tensors)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    budget, filled = total / n_shards, 0
    for tensor in tensors:
        size = int(np.prod(tensor[1])) * 2
        if filled + size > budget * 1.02 and shards[-1] and len(shards) < n_shards:
            shards.append([])
            filled = 0
        shards[-1].append(tensor)
        filled += size
    rng = np.random.default_rng(0)
    weight_map = {}
    for i, group in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(root / name, group, rng)
        weight_map.update({t: name for t, _ in group})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                    "weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": FF, "num_hidden_layers": n_layer, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "float16"}))
    write_tokenizer(root)
    files = sorted(root.glob("model-*.safetensors"))
    return {"n_layer": n_layer, "parameters": total // 2, "model_bytes": sum(f.stat().st_size for f in files),
            "shards": len(files), "largest_shard_bytes": max(f.stat().st_size for f in files),
            "largest_tensor_bytes": max(int(np.prod(shape)) * 2 for _, shape in tensors)}


def write_tokenizer(root: Path) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    from convert.gguf.pretokenizer import LLAMA3_REGEX

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    text = ["The quick brown fox jumps over the lazy dog 0123456789."] * 50
    tok.train_from_iterator(text, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                            "add_bos_token": True}))


CHILD = """
import json, resource, sys, time
from pathlib import Path
from convert.gguf import convert_checkpoint
result = {}
if sys.argv[1] == "prepare":  # convert_checkpoint up to the first weight read
    from gguf.constants import MODEL_TENSOR
    from convert.gguf import find_architecture, plan_tensors
    from convert.gguf.checkpoint import open_checkpoint
    from convert.gguf.hparams import complete_config
    from convert.gguf.vocab import load_vocabulary
    src = Path(sys.argv[2])
    checkpoint = open_checkpoint(src)
    arch, _ = find_architecture(checkpoint.config)
    config = complete_config(checkpoint.config)
    plan = plan_tensors(checkpoint, arch, config, sys.argv[3])
    load_vocabulary(src, config, next(p.shape[0] for p in plan if p.kind == MODEL_TENSOR.TOKEN_EMBD))
if sys.argv[1] == "convert":
    t = time.perf_counter()
    report = convert_checkpoint(Path(sys.argv[2]), Path(sys.argv[3]), outtype=sys.argv[4])
    result = {"seconds": time.perf_counter() - t, "output_size": report.output_size, "tensors": report.tensor_count}
try:  # this process's own high-water mark (ru_maxrss would also count the parent's pages before exec)
    status = open("/proc/self/status").read()
    result["peak_rss"] = int(status.split("VmHWM:")[1].split()[0]) * 1024
except (OSError, IndexError):
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(result))
"""


PRETOKENIZER_CHECK = 'raise NotImplementedError("BPE pre-tokenizer was not recognized - update get_vocab_base_pre()")'


def llama_cpp_converter(source: Path | None, work: Path) -> Path:
    """A patched copy of llama.cpp's convert_hf_to_gguf.py (+ its conversion/ and gguf-py/) in `work`."""
    import shutil
    import tarfile

    if source is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "llama-cpp-python==0.3.36", "-d", str(work)], check=True)
        source = next(work.glob("llama_cpp_python-*.tar.gz"))
    if not source.exists():
        raise SystemExit(f"{source} does not exist; pass llama-cpp-python's sdist or its vendor/llama.cpp folder")
    if source.is_file():
        with tarfile.open(source) as tar:
            tar.extractall(work / "sdist", filter="data")
        source = next((work / "sdist").glob("llama_cpp_python-*")) / "vendor" / "llama.cpp"
    target = work / "llama.cpp"
    shutil.copytree(source / "conversion", target / "conversion")
    shutil.copytree(source / "gguf-py", target / "gguf-py")
    shutil.copy(source / "convert_hf_to_gguf.py", target)
    base = target / "conversion" / "base.py"
    text = base.read_text()
    if PRETOKENIZER_CHECK not in text:
        raise SystemExit(f"{base}: the pre-tokenizer check to patch was not found; update PRETOKENIZER_CHECK")
    base.write_text(text.replace(PRETOKENIZER_CHECK, 'res = "llama-bpe"'))
    return target / "convert_hf_to_gguf.py"


# Runs argv[1:] and prints its wall/CPU time and peak RSS (its own or any child's, from wait4). A
# launcher of its own, started with -S (a few MB): a process forked from this benchmark (hundreds of
# MB of checkpoint building behind it) would count those pages as its own until exec.
LAUNCHER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"status": os.waitstatus_to_exitcode(status), "wall": time.perf_counter() - started,
                  "user": usage.ru_utime, "sys": usage.ru_stime, "peak_rss": usage.ru_maxrss * 1024}))
"""


def run_measured(command: list[str]) -> dict:
    """Run `command` to completion through LAUNCHER: wall and CPU seconds, peak RSS of its process tree."""
    done = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *command], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    if result.pop("status") != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed: {done.stderr[-2000:]}")
    return result


def side_by_side(root: Path, out_dir: Path, outtype: str, pairs: int, llama_script: Path) -> dict:
    """Alternating whole-process runs of both converters on `root`; medians and their ratios."""
    ours_cmd = [str(Path(sys.executable).parent / "edge-ai"), "convert", "gguf", str(root),
                str(out_dir / "ours.gguf"), "--outtype", outtype]
    theirs_cmd = [sys.executable, str(llama_script), str(root), "--outfile", str(out_dir / "theirs.gguf"),
                  "--outtype", outtype]
    runs: dict[str, list[dict]] = {"ours": [], "llama_cpp": []}
    for _ in range(pairs):
        for name, command in (("ours", ours_cmd), ("llama_cpp", theirs_cmd)):
            runs[name].append(run_measured(command))
            for f in out_dir.glob("*.gguf"):
                f.unlink()
    med = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
    return {
        "pairs": pairs,
        **{f"{name}_{key}": round(value / (1e6 if key == "peak_rss" else 1), 2)
           for name, m in med.items() for key, value in m.items()},
        "wall_ratio": round(med["ours"]["wall"] / med["llama_cpp"]["wall"], 3),
        "peak_rss_ratio": round(med["ours"]["peak_rss"] / med["llama_cpp"]["peak_rss"], 3),
        "wall_ratio_target": 1.0,
        "peak_rss_ratio_target": 1.0,
    }


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=500)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--outtype", default="f16", choices=["f32", "f16", "bf16", "q8_0"])
    parser.add_argument("--keep", type=Path, help="build the checkpoint here and keep it")
    parser.add_argument("--pairs", type=int, default=3, help="alternating runs against llama.cpp (0: none)")
    parser.add_argument("--llama-cpp", type=Path, help="llama-cpp-python's vendor/llama.cpp folder or sdist .tar.gz")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        root = args.keep or Path(tmp) / "model"
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        info = make_checkpoint(root, args.size_mb, args.shards)
        build_seconds = time.perf_counter() - started

        baseline_rss = run_child("prepare", str(root), args.outtype)["peak_rss"]  # everything but the weights
        result = run_child("convert", str(root), str(Path(tmp) / "out.gguf"), args.outtype)
        peak_rss = result["peak_rss"]
        (Path(tmp) / "out.gguf").unlink()
        versus = None
        if args.pairs > 0:
            script = llama_cpp_converter(args.llama_cpp, Path(tmp))
            versus = side_by_side(root, Path(tmp), args.outtype, args.pairs, script)

    mb = 1e6
    shard_ratio = peak_rss / info["largest_shard_bytes"]
    tensor_ratio = (peak_rss - baseline_rss) / info["largest_tensor_bytes"]
    tensor_target = tensor_target_ratio(args.outtype)
    print(json.dumps({
        "outtype": args.outtype,
        "n_layer": info["n_layer"],
        "parameters": info["parameters"],
        "shards": info["shards"],
        "model_mb": round(info["model_bytes"] / mb, 1),
        "largest_shard_mb": round(info["largest_shard_bytes"] / mb, 1),
        "largest_tensor_mb": round(info["largest_tensor_bytes"] / mb, 1),
        "output_mb": round(result["output_size"] / mb, 1),
        "checkpoint_build_seconds": round(build_seconds, 2),
        "convert_seconds": round(result["seconds"], 2),
        "throughput_mb_s": round(info["model_bytes"] / mb / result["seconds"], 1),
        "baseline_rss_mb": round(baseline_rss / mb, 1),
        "peak_rss_mb": round(peak_rss / mb, 1),
        "peak_rss_over_model": round(peak_rss / info["model_bytes"], 3),
        "peak_rss_over_largest_shard": round(shard_ratio, 3),
        "target_ratio": TARGET_RATIO,
        "peak_rss_growth_over_largest_tensor": round(tensor_ratio, 3),
        "tensor_target_ratio": round(tensor_target, 3),
        "meets_target": shard_ratio < TARGET_RATIO and tensor_ratio <= tensor_target,
        "vs_llama_cpp": versus,
        "meets_llama_cpp_target": None if versus is None else
        versus["wall_ratio"] <= versus["wall_ratio_target"] and versus["peak_rss_ratio"] <= versus["peak_rss_ratio_target"],
    }, indent=2))


if __name__ == "__main__":
    main()
