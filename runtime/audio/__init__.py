"""Audio: speech-to-text (and, later, device streams, VAD, echo cancellation, TTS, turn-taking)."""
