"""How soon speech can start, and how fast each voice synthesises; prints JSON.

A reply-sized markdown text is cut by SpeakableChunker; for each backend available here the time
to the first chunk's audio (what a listener waits for) is compared with synthesising the whole
text at once (what they would wait without chunking), and the real-time factor (synthesis seconds
per second of audio) is measured over the chunks. Rounds alternate the two ways so machine noise
hits both; each figure is the median over rounds. espeak-ng's process start (~25 ms) is paid per
chunk, so the ratio is not the chunk's share of the words.

espeak-ng always runs; a piper voice runs when given (`--piper VOICE.onnx`, its .onnx.json beside
it): none can be downloaded here.

    python benchmarks/bench_tts.py [--rounds 5] [--piper voice.onnx]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from runtime.audio.speakable import SpeakableChunker, speakable_text
from runtime.audio.tts import EspeakTTS, PiperTTS, TextToSpeech

REPLY = """Sure, here is a quick overview of how the assistant works. It listens through your microphone, \
turns your speech into text with Whisper, and sends that text to a small language model running on your laptop.

The model streams its answer back word by word. As soon as the first phrase is complete, it is spoken, \
while the rest of the answer is still being written. Nothing leaves your computer: there is no cloud service, \
so it works on a plane as well as at your desk. If you start talking while it speaks, it stops at once and \
listens to you instead.
"""


def measure(tts: TextToSpeech, rounds: int) -> dict[str, object]:
    chunker = SpeakableChunker()
    chunks = chunker.feed(REPLY) + chunker.flush()
    whole_text = speakable_text(REPLY)
    tts.synthesize("Warm up.")
    first, whole, rtf = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        tts.synthesize(chunks[0])
        first.append(time.perf_counter() - start)
        start = time.perf_counter()
        audio = tts.synthesize(whole_text)
        whole.append(time.perf_counter() - start)
        start = time.perf_counter()
        seconds = sum(len(tts.synthesize(chunk)) for chunk in chunks) / tts.sample_rate
        rtf.append((time.perf_counter() - start) / seconds)
    first_s, whole_s = statistics.median(first), statistics.median(whole)
    return {
        "voice": tts.name, "sample_rate": tts.sample_rate, "chunks": len(chunks), "first_chunk": chunks[0],
        "audio_s": round(len(audio) / tts.sample_rate, 2),
        "first_audio_s": round(first_s, 4), "whole_text_s": round(whole_s, 4),
        "first_audio_ratio": round(first_s / whole_s, 3),
        "rtf_chunked": round(statistics.median(rtf), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--piper", type=Path, help="a piper voice .onnx (with its .onnx.json) to measure too")
    args = parser.parse_args()
    voices: list[TextToSpeech] = [EspeakTTS("en-us")]
    if args.piper:
        voices.append(PiperTTS(args.piper))
    report = {"backends": [measure(tts, args.rounds) for tts in voices], "rounds": args.rounds}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
