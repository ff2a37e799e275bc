"""`edge-ai transcribe`'s path (LongTranscription) on a long recording with silences, with and without
cutting them first (SilenceCutter, Silero VAD).

    python benchmarks/bench_transcribe.py [--sentences 32] [--threads 0] [--seed 0]

The recording (`convert.onnx.speech.long_recording`): the fixed espeak-ng sentences (4 voices) in order,
after each a pause drawn at random: mostly short (0.3-1.5 s, as between sentences of one speaker), every
third a gap of 3-40 s of hiss at -60 dBFS (a meeting's silences). Both runs decode as the CLI does for
srt/vtt/json (word times, the temperature fallback, CTranslate2's sampling seeded alike), so the difference
is the cut alone.
Prints JSON per run: corpus WER, inserted words (Whisper's hallucinations in silence are
insertions), sentences whose first word was heard with a time within 1 s of where it was said
(`dated_right`), windows decoded, seconds and real-time factor; and the cut run's time as a share
of the uncut one's.

Measured 2026-12-04 (2 cores, Whisper base int8): seed 0, 372 s: uncut WER 20.3% (65 errors, 16
inserted words), 19 windows, 55 s; cut 13.4% (43, 9), 8 windows, 17.6 s (a share of 0.32). Seed 1,
415 s: uncut 17.8% (57), cut 12.8% (41), time share 0.53. All 32 sentences dated right in all four.

With --beam-size 5 (2026-12-05): seed 0 uncut 21.2% (31 inserted words), cut 16.2% (24 inserted); seed 1
uncut 15.3%, cut 22.1% (30 inserted, 30 sentences dated right): the last window wrote the prompt out again
("My password must have at least 12 characters." three times for the last two sentences), and short
phrases ("No, it's going to be cold.") went into the hiss at windows' ends. Once such segments (more words
than 1 + 8 a second of their time) are left out, the same day: seed 0 cut 13.4% greedy / 14.6% beam 5
(uncut 20.9 / 20.3), seed 1 cut 12.8 / 12.5 (uncut 16.8 / 16.2): the beam no longer breaks long files but
gains nothing on them either, and takes up to twice as long (the cut runs: 16-18 s against 9-13 s, two
runs each). The CLI decodes greedily.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convert.onnx.speech import long_recording, normalize  # noqa: E402
from runtime.audio.long_audio import LongTranscription  # noqa: E402
from runtime.audio.stt import FasterWhisperSTT  # noqa: E402
from runtime.audio.whisper_model import whisper_base  # noqa: E402

RATE = 16_000
BLOCK = RATE  # samples read at a time (1 s), as read_audio_blocks gives them


def run(stt: FasterWhisperSTT, audio: np.ndarray, placed: list[tuple[str, float]], cut: bool) -> dict:
    import ctranslate2
    import jiwer

    ctranslate2.set_random_seed(0)
    start = time.perf_counter()
    job = LongTranscription(stt, (audio[i:i + BLOCK] for i in range(0, len(audio), BLOCK)), word_timestamps=True,
                            cut_silence=cut)
    segments = list(job)
    seconds = time.perf_counter() - start
    said = [normalize(text).split() for text, _ in placed]
    heard = [(token, word.start) for s in segments for word in s.words for token in normalize(word.text).split()]
    measures = jiwer.process_words(" ".join(w for words in said for w in words), " ".join(t for t, _ in heard))
    return {"wer": round(measures.wer, 4), "errors": measures.substitutions + measures.deletions + measures.insertions,
            "inserted_words": measures.insertions, "segments": len(segments),
            "dated_right": dated_right(said, [at for _, at in placed], [at for _, at in heard], measures.alignments[0]),
            "sentences": len(placed), "windows_decoded": job.windows, "seconds": round(seconds, 2),
            "rtf": round(seconds / (len(audio) / RATE), 4)}


def dated_right(said: list[list[str]], starts: list[float], heard_at: list[float], alignment: list) -> int:
    """Sentences whose first word was heard (matched or substituted) with a time within 1 s of their start."""
    firsts = np.cumsum([0] + [len(words) for words in said])[:-1]
    count = 0
    for first, start in zip(firsts, starts):
        chunk = next((c for c in alignment if c.ref_start_idx <= first < c.ref_end_idx), None)
        if chunk is not None and chunk.type in ("equal", "substitute"):
            count += int(abs(heard_at[chunk.hyp_start_idx + first - chunk.ref_start_idx] - start) <= 1.0)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=32, help="how many of the fixed set (max 32)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = physical cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pauses")
    parser.add_argument("--beam-size", type=int, default=1, help="hypotheses kept (1: greedy, as the CLI decodes)")
    args = parser.parse_args()
    import tempfile

    audio, placed = long_recording(args.sentences, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        stt = FasterWhisperSTT(whisper_base(Path(tmp) / "base"), threads=args.threads, beam_size=args.beam_size)
        uncut = run(stt, audio, placed, cut=False)
        cut = run(stt, audio, placed, cut=True)
    print(json.dumps({"audio_seconds": round(len(audio) / RATE, 1), "uncut": uncut, "cut": cut,
                      "cut_time_share": round(cut["seconds"] / uncut["seconds"], 3)}, indent=2))


if __name__ == "__main__":
    main()
