"""Silero VAD v6 (16 kHz): the network on backend ops, its weights from the silero-vad package, and
the speech-region rules of silero's `get_speech_timestamps`. Public surface: `polyasr.vad`."""
