"""Speech-to-text through the streaming pipeline vs faster-whisper called directly, on espeak-ng sentences.

    python benchmarks/bench_stt.py [--sentences 32] [--chunk 0.5] [--threads 0]

Prints JSON: corpus WER of faster-whisper on each whole clip (the direct call) and of
StreamingTranscriber fed the same clip in chunks with an update after each, then finished; their
real-time factors; and how much audio finish() decoded against the whole clip (the point of
confirming words while the user speaks). The sentences and voices are convert.onnx.speech's fixed
set (en-us, en-gb, en-us+f3, en-gb-scotland). The issue's target: pipeline WER within 0.5 point of
the direct call. Both decode at temperature 0 only (no sampled fallback, a beam of voice.stt_beam_size
= 5) so the comparison is exact; they take turns per sentence, so load on the machine slows them alike.

Also run on long utterances: each voice's sentences said `--long` at a time (~27 s each), which the
streaming transcriber cuts (CUT_AFTER_SECONDS) so that its decodes stay short.

Measured 2026-12-02, 32 sentences (4 voices, 97 s), 0.5 s chunks, 2 AVX2 cores, the encoder window
fitted to the clip: direct WER 18.4% (59 errors), pipeline 18.4%: the same (an utterance under 20 s
is decoded whole, and finish() reuses the last update's decode); 0.49 s per direct decode, 0.52 s
per update. Long utterances (4 x 27 s): direct 6.2%, pipeline 14.3%, finish() decoding 29% of the
audio: NOT within the target; partials of a clip that ends mid-word confirm wrong words, which the
cut then keeps.

Measured 2026-12-03 after new words are found by word times rather than counted: sentences direct
16.8% = pipeline 16.8% (54 errors each); long utterances direct 6.85% (22 errors), pipeline 7.48%
(24), 0.62 points apart (was 8.1), finish() decoding 30% of the audio.

`noise_floor` decodes each clip twice more, shifted by one sample and at 0.8 of its level: Whisper's
errors move by themselves under changes no one hears, and a difference within that is not the
pipeline's. Measured again the same day: sentences direct 54 errors, shifted 53, quieter 56,
pipeline 54; long utterances direct 22, shifted 21, quieter 22, pipeline 24. One of the pipeline's
extra errors is LocalAgreement's known weakness: two decodes of the clip so far, each ending inside
"has run out", both wrote "from London" (words of the utterance's first sentence), so it was
confirmed and kept.

Measured 2026-12-03 in a fresh install (faster-whisper 1.2.1, CTranslate2 4.8.5), where the same code
gave long utterances direct 20 errors, pipeline 31: once a word is confirmed only after the older
decode heard a second of audio past it (streaming_stt.EDGE_SECONDS), sentences direct 59 = pipeline 59
(floor 62-64), long utterances direct 20, pipeline 21 (floor 21-21): 0.31 points; finish() decodes 35%
of the audio.

Measured 2026-12-05 with beam search (5 hypotheses; greedy before): sentences direct 46 errors (14.3%) =
pipeline 46, floor 44-46 (greedy the same run: 59 = 59, floor 62-64); 0.30 s per direct decode and 0.29 s
per update (greedy 0.26 / 0.25). Long utterances (--long 4: 8 x 13 s): direct 23 = pipeline 23, floor 21-23 (greedy:
23 = 23, floor 24-26); 0.65 s per update (greedy 0.48), so the partials of a long utterance come less often.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convert.onnx.speech import SAMPLE_RATE, normalize, speak, wer_set, word_errors  # noqa: E402
from runtime.audio.streaming_stt import StreamingTranscriber  # noqa: E402
from runtime.audio.stt import FasterWhisperSTT  # noqa: E402
from runtime.audio.whisper_model import whisper_base  # noqa: E402


def measure(stt: FasterWhisperSTT, speech: list[tuple[str, str, np.ndarray]], chunk_seconds: float) -> dict:
    """Direct and streamed decodes of each clip, word errors counted per voice."""
    streamer = StreamingTranscriber(stt)
    chunk = int(chunk_seconds * SAMPLE_RATE)
    totals = {"direct_errors": 0, "pipeline_errors": 0, "shifted_errors": 0, "quieter_errors": 0, "words": 0,
              "direct_seconds": 0.0,
              "update_seconds": 0.0, "updates": 0, "finish_seconds": 0.0, "finish_audio": 0.0, "audio": 0.0}
    voices: dict[str, dict[str, int]] = {}
    for text, voice, samples in speech:
        start = time.perf_counter()
        direct = stt.transcribe(samples).text
        totals["direct_seconds"] += time.perf_counter() - start
        streamer.reset()
        for i in range(0, len(samples), chunk):
            streamer.add(samples[i:i + chunk])
            totals["update_seconds"] += streamer.update().decode_seconds
            totals["updates"] += 1
        start = time.perf_counter()
        final = streamer.finish()
        totals["finish_seconds"] += time.perf_counter() - start
        totals["finish_audio"] += streamer.decoded_seconds
        totals["audio"] += len(samples) / SAMPLE_RATE
        d, words = word_errors(text, direct)
        p = word_errors(text, final)[0]
        # the same clip changed inaudibly: how far Whisper's errors move on their own (the noise floor)
        totals["shifted_errors"] += word_errors(text, stt.transcribe(np.concatenate([[0.0], samples])
                                                                     .astype(np.float32)).text)[0]
        totals["quieter_errors"] += word_errors(text, stt.transcribe(0.8 * samples).text)[0]
        totals["direct_errors"] += d
        totals["pipeline_errors"] += p
        totals["words"] += words
        per_voice = voices.setdefault(voice, {"direct_errors": 0, "pipeline_errors": 0, "words": 0})
        per_voice["direct_errors"] += d
        per_voice["pipeline_errors"] += p
        per_voice["words"] += words
        if normalize(direct) != normalize(final):
            print(json.dumps({"voice": voice, "text": text, "direct": direct, "pipeline": final}), file=sys.stderr)

    words, audio = totals["words"], totals["audio"]
    direct_wer, pipeline_wer = totals["direct_errors"] / words, totals["pipeline_errors"] / words
    return {
        "clips": len(speech), "words": words, "audio_seconds": round(audio, 1),
        "direct": {"wer": round(direct_wer, 4), "errors": totals["direct_errors"],
                   "rtf": round(totals["direct_seconds"] / audio, 3),
                   "decode_seconds_per_clip": round(totals["direct_seconds"] / len(speech), 3)},
        "pipeline": {"wer": round(pipeline_wer, 4), "errors": totals["pipeline_errors"],
                     "rtf_updates": round(totals["update_seconds"] / audio, 3),
                     "decode_seconds_per_update": round(totals["update_seconds"] / totals["updates"], 3),
                     "finish_seconds_per_clip": round(totals["finish_seconds"] / len(speech), 3)},
        "wer_difference_points": round((pipeline_wer - direct_wer) * 100, 2),
        "noise_floor": {"direct_errors_clip_shifted_1_sample": totals["shifted_errors"],
                        "direct_errors_clip_at_gain_0_8": totals["quieter_errors"]},
        "target_within_0_5_points": abs(pipeline_wer - direct_wer) * 100 <= 0.5,
        "finish_audio_over_clip": round(totals["finish_audio"] / audio, 3),
        "per_voice": {v: {"direct_wer": round(c["direct_errors"] / c["words"], 4),
                          "pipeline_wer": round(c["pipeline_errors"] / c["words"], 4)} for v, c in voices.items()},
    }


def long_utterances(speech: list[tuple[str, str, np.ndarray]], per_utterance: int) -> list[tuple[str, str, np.ndarray]]:
    """Each voice's sentences said `per_utterance` at a time with 0.3 s pauses: utterances long enough to be cut."""
    pause = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    by_voice: dict[str, list[tuple[str, np.ndarray]]] = {}
    for text, voice, samples in speech:
        by_voice.setdefault(voice, []).append((text, samples))
    joined = []
    for voice, said in by_voice.items():
        for i in range(0, len(said) - per_utterance + 1, per_utterance):
            group = said[i:i + per_utterance]
            joined.append((" ".join(t for t, _ in group), voice,
                           np.concatenate([part for _, samples in group for part in (samples, pause)])))
    return joined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=32, help="how many of the fixed set (max 32)")
    parser.add_argument("--chunk", type=float, default=0.5, help="seconds of audio between streaming updates")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = physical cores)")
    parser.add_argument("--long", type=int, default=8, help="sentences per long utterance (0: none)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-stt-") as tmp:
        stt = FasterWhisperSTT(whisper_base(Path(tmp) / "whisper-base"), threads=args.threads, temperatures=(0.0,))
        speech = [(text, voice, speak(text, voice)) for text, voice in wer_set()[:args.sentences]]
        stt.transcribe(speech[0][2])  # warm-up
        report = {"chunk_seconds": args.chunk, "sentences": measure(stt, speech, args.chunk)}
        if args.long:
            report["long_utterances"] = measure(stt, long_utterances(speech, args.long), args.chunk)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
