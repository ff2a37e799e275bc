"""`evaluate`, `sweep` and `pick` on the real default model (Gemma 3 270M Q4_K_M) requantized to
Q4_0 and Q8_0 and scored against the original, on a short English text (3 windows of 128 tokens)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from convert.chunks import MIN_CTX
from convert.evaluate import SweepRow, evaluate, format_table, parse_size, pick, sweep
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import read_gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for tiny_gguf
from tiny_gguf import write_tiny_llama

CTX = 128
CHUNKS = 3

TEXT = """\
Every spring the river below the old mill rises with snowmelt from the hills, and for a few weeks
the water runs brown and loud under the stone bridge. Children drop sticks on one side and race to
the other to see whose comes out first. Their grandparents did the same, and the bridge, which was
built in 1843 by a mason whose initials are still carved under the central arch, has outlived three
floods, two wars and a plan to replace it with a concrete road.

The mill itself stopped grinding grain in the nineteen-fifties. For a while it stored apples, then
furniture, then nothing at all. A cooperative of bakers bought it ten years ago, repaired the wheel
and now sells flour milled the slow way: whole wheat, spelt and a coarse rye that makes bread so
dense a single loaf weighs nearly two kilograms. Visitors on Saturday mornings can watch the stones
turn and ask questions, and the miller, a patient woman named Ruth, answers every one of them.

How does a waterwheel turn the flow of a river into useful work? The water pushes on paddles or
fills buckets on one side of the wheel, and gravity does the rest. A wooden axle carries the
rotation into the building, where gears made of hornbeam and iron change its speed and direction.
The upper millstone spins above a fixed lower one; grain falls through a hole in the centre and is
ground as it travels outwards along shallow grooves cut into both faces.

Engineers who restore such machines keep careful notes. They measure every tooth before replacing
a gear, photograph each joint, and test new parts at low speed before trusting them with a full
load. Mistakes are expensive: a cracked stone can fly apart, and a jammed gear can tear the axle
from its bearings. So they check, and then they check again, and only when the numbers agree do
they let the water back onto the wheel.

In the evening the village is quiet. Swallows cut across the millpond, a dog barks somewhere up
the lane, and the last bus to the city leaves at twenty past nine. People sit outside the café with
glasses of cider and argue, good-naturedly, about football, the weather, and whether the new
bakery really is better than the old one. Nobody ever wins those arguments, which is exactly why
they are worth having again the next night.
"""


@pytest.fixture(scope="module")
def rows(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[SweepRow]:
    steps: list[tuple[int, int, str]] = []
    result = sweep(model_path, ["Q4_0", "Q8_0"], TEXT, workdir=tmp_path_factory.mktemp("sweep"), ctx=CTX,
                   max_chunks=CHUNKS, threads=2, progress=lambda d, t, label: steps.append((d, t, label)))
    assert steps[0] == (0, 3, "Q4_0: planning") and steps[-1] == (3, 3, "done")
    assert (2, 3, "evaluating Q4_0, Q8_0") in steps  # both fit beside the reference: one pass over the text
    return result


@pytest.mark.slow
def test_sweep_scores_requantized_models_against_the_original(rows: list[SweepRow], model_path: Path) -> None:
    ref, q4, q8 = rows
    assert ref.reference and ref.type == "Q4_K_M" and ref.path == model_path and ref.kld_mean == 0.0
    assert (q4.type, q8.type) == ("Q4_0", "Q8_0") and not q4.skipped and not q8.skipped
    for row in (q4, q8):
        for value in (row.ppl, row.ppl_err, row.kld_mean, row.kld_p99, row.kld_max, row.top1,
                      row.prefill_tps, row.decode_tps):
            assert value is not None and math.isfinite(value)
        assert 1 < row.ppl < 10_000 and 0 <= row.kld_mean <= row.kld_p99 <= row.kld_max
        assert row.delta_ppl == pytest.approx(row.ppl - ref.ppl)
        assert row.size_bytes == row.path.stat().st_size == read_gguf(row.path).file_size
    assert q8.kld_mean < q4.kld_mean and q8.top1 > q4.top1
    assert q4.size_bytes < q8.size_bytes and q4.bpw < q8.bpw
    assert abs(q8.delta_ppl) < abs(q4.delta_ppl)


@pytest.mark.slow
def test_models_evaluated_together_match_alone_and_share_one_reference_pass(
        rows: list[SweepRow], model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convert import evaluate as ev

    _, q4, q8 = rows
    decoded: list[str] = []
    real_logits = ev._Scorer.logits

    def counted(self, window, first):
        decoded.append(self.name)
        return real_logits(self, window, first)

    monkeypatch.setattr(ev._Scorer, "logits", counted)
    alone = evaluate(q4.path, TEXT, reference=model_path, ctx=CTX, max_chunks=CHUNKS, threads=2, speed=False)
    assert decoded.count(model_path.name) == CHUNKS
    decoded.clear()
    together = ev.evaluate_many([q4.path, q8.path], TEXT, reference=model_path, ctx=CTX, max_chunks=CHUNKS,
                                threads=2, speed=False)
    assert decoded.count(model_path.name) == CHUNKS  # not 2 x CHUNKS
    assert decoded.count(q4.path.name) == decoded.count(q8.path.name) == CHUNKS
    assert together[0].kld_mean == pytest.approx(alone.kld_mean, rel=1e-6)
    assert together[0].ppl == pytest.approx(alone.ppl, rel=1e-6) and together[0].top1 == alone.top1
    assert together[1].kld_mean == pytest.approx(q8.kld_mean, rel=1e-6)


@pytest.mark.slow
def test_pick_within_budgets(rows: list[SweepRow]) -> None:
    _, q4, q8 = rows
    assert pick(rows) is q8  # the most faithful
    assert pick(rows, max_size=q8.size_bytes - 1) is q4
    assert pick(rows, max_size=q8.size_bytes) is q8  # both fit: the most faithful
    assert pick(rows, max_kld=q4.kld_mean / 2) is q8
    assert pick(rows, max_kld=q4.kld_mean * 2) is q4  # both faithful enough: the smaller file
    assert pick(rows, max_size=q8.size_bytes, max_kld=q4.kld_mean * 2) is q8
    with pytest.raises(EdgeAIError, match="no quantization fits size <= .* and KLD <= .*smallest is Q4_0"):
        pick(rows, max_size=q4.size_bytes - 1, max_kld=q8.kld_mean / 2)


@pytest.mark.slow
def test_table_and_json(rows: list[SweepRow]) -> None:
    table = format_table(rows, picked=pick(rows))
    assert table.row_count == 3 and len(table.columns) == 10
    data = json.loads(json.dumps([row.to_dict() for row in rows]))
    assert data[2]["type"] == "Q8_0" and data[2]["kld_mean"] == rows[2].kld_mean and data[0]["reference"]


@pytest.mark.slow
def test_sweep_skips_types_over_the_size_budget(model_path: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "quants"
    result = sweep(model_path, ["q8_0"], TEXT, workdir=workdir, max_size=parse_size("100MiB"), ctx=CTX,
                   max_chunks=1)
    assert result[1].type == "Q8_0" and "over the 100.0 MiB budget" in result[1].skipped
    assert not workdir.exists() or list(workdir.iterdir()) == []  # nothing was built
    with pytest.raises(EdgeAIError, match="no quantization was evaluated"):
        pick(result, max_size=parse_size("100MiB"))


@pytest.mark.slow
def test_evaluate_alone_and_strided(model_path: Path) -> None:
    plain = evaluate(model_path, TEXT, ctx=CTX, max_chunks=2, threads=2, decode_tokens=4)
    assert plain.n_chunks == 2 and plain.n_scored == 2 * (CTX - 1 - CTX // 2)
    assert math.isfinite(plain.ppl) and plain.ppl_err > 0 and plain.kld_mean is None and plain.delta_ppl is None
    assert plain.prefill_tps > 0 and plain.decode_tps > 0
    assert plain.file_bytes == model_path.stat().st_size and 7 < plain.bpw < 8
    strided = evaluate(model_path, TEXT, ctx=CTX, stride=32, max_chunks=3, threads=2, speed=False)
    assert strided.n_scored == 3 * 32 and strided.prefill_tps is None and math.isfinite(strided.ppl)
    assert json.loads(json.dumps(strided.to_dict()))["stride"] == 32


@pytest.mark.slow
def test_reference_with_another_vocabulary_is_refused(model_path: Path, tmp_path: Path) -> None:
    tiny = write_tiny_llama(tmp_path / "tiny.gguf")
    with pytest.raises(EdgeAIError, match="different vocabularies"):
        evaluate(tiny, TEXT, reference=model_path, ctx=CTX, max_chunks=1)


def test_text_too_short_or_bad_options(tmp_path: Path) -> None:
    tiny = write_tiny_llama(tmp_path / "tiny.gguf")
    with pytest.raises(EdgeAIError, match="only .* tokens but one evaluation window needs 256"):
        evaluate(tiny, "a short text", ctx=256)
    with pytest.raises(EdgeAIError, match="stride"):
        evaluate(tiny, TEXT, ctx=128, stride=128)
    with pytest.raises(EdgeAIError, match="empty"):
        evaluate(tiny, "  \n", ctx=128)
    with pytest.raises(EdgeAIError, match=f"context {MIN_CTX - 1} is too small; use at least {MIN_CTX} tokens"):
        evaluate(tiny, TEXT, ctx=MIN_CTX - 1)
    smallest = evaluate(tiny, TEXT, ctx=MIN_CTX, max_chunks=1, speed=False)  # what the message allows works
    assert smallest.n_scored == MIN_CTX - 1 - MIN_CTX // 2 and math.isfinite(smallest.ppl)


def test_evaluate_tiny_model_against_itself(tmp_path: Path) -> None:
    tiny = write_tiny_llama(tmp_path / "tiny.gguf")
    report = evaluate(tiny, TEXT, reference=tiny, ctx=128, max_chunks=2, speed=False)
    assert report.kld_mean == pytest.approx(0, abs=1e-6) and report.top1 == 100.0
    assert report.ppl == pytest.approx(report.reference_ppl)


def _row(qtype: str, mib: float, kld: float, **extra) -> SweepRow:
    return SweepRow(qtype, Path(f"{qtype}.gguf"), size_bytes=int(mib * 2**20), bpw=0.0, kld_mean=kld, **extra)


def test_pick_spends_each_budget_its_own_way() -> None:
    """--max-size: most faithful that fits; --max-kld: smallest within it; both: most faithful within both."""
    ref = _row("F16", 500, 0.0, reference=True)
    q2, q4, q5, q8 = _row("Q2_K", 100, 0.30), _row("Q4_K_M", 160, 0.05), _row("Q5_K_M", 180, 0.02), \
        _row("Q8_0", 260, 0.001)
    skipped = _row("IQ1_S", 60, 0.0, skipped="needs an importance matrix")
    rows = [ref, q2, q4, q5, q8, skipped]
    assert pick(rows, max_size=200 * 2**20) is q5
    assert pick(rows, max_kld=0.1) is q4
    assert pick(rows, max_kld=1.0) is q2
    assert pick(rows, max_size=200 * 2**20, max_kld=0.1) is q5
    assert pick(rows, max_size=170 * 2**20, max_kld=0.1) is q4
    assert pick(rows) is q8
    tie = _row("Q4_K_S", 160, 0.04)
    assert pick([*rows, tie], max_kld=0.1) is tie  # same size: the lower KLD
    with pytest.raises(EdgeAIError, match=r"no quantization fits size <= 50\.0 MiB: the smallest is Q2_K"):
        pick(rows, max_size=50 * 2**20)


def test_parse_size() -> None:
    assert parse_size("300MB") == 300_000_000
    assert parse_size("1.5GiB") == parse_size("1.5g") == int(1.5 * 2**30)
    assert parse_size("12345") == 12345 and parse_size(7) == 7
    with pytest.raises(EdgeAIError, match="cannot read the size"):
        parse_size("lots")
