"""One hour of audio in bounded memory: loading the file, the VAD over all of it, the chunk plan
and the decoding hold the samples themselves and nothing that grows with the hour beyond them.

The file is an hour of silence with one sentence at the start and one near the end (so the VAD
runs over the whole hour and the decoding is cheap), written here as 16 kHz 16-bit WAV. A fresh
process loads Whisper tiny.en (real weights), warms up on the sentence, then transcribes the file
with VAD on, sequentially and in batched pieces; its peak RSS (VmHWM, reset before each call through
/proc/self/clear_refs) is compared with its RSS before the call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import need_silero_vad

from polyasr.audio import SAMPLE_RATE, load_audio

HOUR = 3600
SPEECH_AT = (2.0, HOUR - 60.0)  # seconds where en_short is placed
AUDIO_MB = HOUR * SAMPLE_RATE * 4 / 2**20  # the decoded samples: float32 mono
# What may come on top of the samples: the VAD's blocks, one batch of 30 s windows through the
# encoder and decoder, allocator slack. An hour-long array of any kind (a second copy of the
# samples, a mask, a whole-file spectrogram: 360 000 frames x 80 mels = 110 MB) does not fit.
ALLOWED_EXTRA_MB = 100

_CHILD = textwrap.dedent("""
    import json, sys
    from polyasr import AsrEngine, TranscribeOptions
    from polyasr.audio import load_audio

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key + ":"))

    model_dir, path, sentence = sys.argv[1:4]
    engine = AsrEngine.from_model("whisper-tiny.en", model_dir, device="cpu")
    out = {}
    for name, batch in (("sequential", 1), ("batched", 8)):
        options = TranscribeOptions(vad=True, batch_size=batch, beam_size=1, temperatures=(0.0,))
        engine.transcribe(load_audio(sentence), options)  # warm-up: every buffer a window needs
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        before = status("VmRSS")
        result = engine.transcribe_file(path, options)
        out[name] = {
            "growth_mb": status("VmHWM") - before,
            "start": result.segments[0].start if result.segments else None,
            "end": result.segments[-1].end if result.segments else None,
            "text": result.text,
        }
    print(json.dumps(out))
""")


def _write_hour(path: Path, speech: np.ndarray) -> None:
    """An hour of zeros with `speech` at SPEECH_AT, written a minute at a time."""
    minute = SAMPLE_RATE * 60
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16") as f:
        for first in range(0, HOUR * SAMPLE_RATE, minute):
            block = np.zeros(minute, dtype=np.float32)
            for at in SPEECH_AT:
                lo = int(at * SAMPLE_RATE) - first
                a, b = max(lo, 0), min(lo + len(speech), minute)
                if a < b:
                    block[a:b] = speech[a - lo : b - lo]
            f.write(block)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from Linux's /proc")
def test_one_hour_file_with_vad_in_bounded_memory(whisper_tiny_en_dir, fixtures_dir, tmp_path):
    need_silero_vad()
    sentence = fixtures_dir / "en_short.wav"
    path = tmp_path / "hour.wav"
    speech = load_audio(sentence)
    _write_hour(path, speech)
    run = subprocess.run(  # one torch thread: a tiny model, and a CI machine shared with other jobs
        [sys.executable, "-c", _CHILD, str(whisper_tiny_en_dir), str(path), str(sentence)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    for name, found in out.items():
        assert found["growth_mb"] < AUDIO_MB + ALLOWED_EXTRA_MB, (
            f"{name}: peak RSS grew by {found['growth_mb']:.0f} MB over an hour of audio ({AUDIO_MB:.0f} MB of samples)"
        )
        # both sentences found, in the file's time: the VAD saw the whole hour and skipped the silence
        assert found["text"].lower().count("weather") == 2, found["text"]
        # (a segment may span the seam of the two regions: only the ends are the file's)
        assert found["start"] == pytest.approx(SPEECH_AT[0], abs=1.0)
        assert found["end"] == pytest.approx(SPEECH_AT[1] + len(speech) / SAMPLE_RATE, abs=1.0)
