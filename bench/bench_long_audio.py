"""Long audio end to end on CPU: RTF and peak RSS growth of `transcribe_file` on one long file.

The file is built at run time (nothing big is committed): tests/fixtures speech tiled with
silences (en_long, 4 s of silence, en_medium, 8 s of silence: 88 % speech), written as 16 kHz
16-bit WAV. Quick default: 2 minutes (Qwen3-ASR: its first 30 s); POLYASR_BENCH_FULL=1: one hour
for every row.

Rows, each in a fresh process (so its peak RSS is its own; VmHWM is reset after a warm-up on
en_short and compared with the RSS before the call, the file's samples included):
- Whisper base (real weights, greedy, English forced): sequential 30 s windows (VAD off, the
  baseline), sequential with VAD on, and batched VAD pieces (batch_size 8, `models/whisper/pieces.py`);
- GigaAM v3 CTC, Parakeet TDT 0.6B v3, Qwen3-ASR-0.6B with VAD on, batch_size 8, at their real
  dimensions with random weights (`random_checkpoints.py`: the timing of the real shapes, noise
  for text; Qwen3-ASR decodes every piece to its token bound, its slowest case).

Run: `pytest bench/bench_long_audio.py --benchmark-only` (quick default under 3 minutes on 2 idle cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import FIXTURES, FULL, RESULTS, note

from polyasr.audio import SAMPLE_RATE, load_audio

SECONDS = 3600 if FULL else 120
QWEN_SECONDS = 3600 if FULL else 30
WHISPER, GIGAAM, PARAKEET, QWEN = "whisper-base", "gigaam-v3-ctc", "parakeet-tdt-v3", "qwen3-asr-0.6b"
# (row name, model, options); the first Whisper row is the baseline of its group
ROWS = [
    ("sequential, VAD off", WHISPER, dict(batch_size=1, vad=False)),
    ("sequential, VAD on", WHISPER, dict(batch_size=1, vad=True)),
    ("batched pieces (8), VAD on", WHISPER, dict(batch_size=8, vad=True)),
    ("VAD on, batch 8", GIGAAM, dict(batch_size=8, vad=True)),
    ("VAD on, batch 8", PARAKEET, dict(batch_size=8, vad=True)),
    ("VAD on, batch 8", QWEN, dict(batch_size=8, vad=True)),
]
WHISPER_OPTIONS = dict(language="en", beam_size=1)

_CHILD = textwrap.dedent("""
    import json, sys, time
    from polyasr import AsrEngine, TranscribeOptions
    from polyasr.audio import load_audio

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key + ":"))

    model, checkpoint, path, warm, options = sys.argv[1:6]
    engine = AsrEngine.from_model(model, checkpoint, device="cpu", dtype="float32")
    options = TranscribeOptions(**json.loads(options))
    engine.transcribe(load_audio(warm), options)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = status("VmRSS")
    t0 = time.perf_counter()
    result = engine.transcribe_file(path, options)
    secs = time.perf_counter() - t0
    print(json.dumps({
        "secs": secs, "growth_mb": status("VmHWM") - before, "rss_mb": before,
        "duration": result.audio_duration_secs, "chunks": result.info["chunks"],
        "words": len(result.text.split()), "timings": result.timings,
    }))
""")


def _write_long(path: Path, seconds: float) -> Path:
    """Speech fixtures and silences repeated to `seconds`, written a period at a time."""
    silence = lambda s: np.zeros(int(s * SAMPLE_RATE), dtype=np.float32)  # noqa: E731
    period = np.concatenate(
        [load_audio(FIXTURES / "en_long.wav"), silence(4), load_audio(FIXTURES / "en_medium.wav"), silence(8)]
    )
    total = int(seconds * SAMPLE_RATE)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16") as f:
        for first in range(0, total, len(period)):
            f.write(period[: total - first])
    return path


@pytest.fixture(scope="module")
def workdir():
    return Path(tempfile.mkdtemp(prefix="bench-long-audio-"))


_CHECKPOINTS: dict[str, Path] = {}


def _checkpoint(model: str, workdir: Path, whisper_base_dir: Path) -> Path:
    if model == WHISPER:
        return whisper_base_dir
    if model not in _CHECKPOINTS:
        pytest.importorskip("transformers")
        import random_checkpoints

        write = {GIGAAM: random_checkpoints.gigaam_v3, PARAKEET: random_checkpoints.parakeet_v3}
        write[QWEN] = random_checkpoints.qwen3_asr_06b
        _CHECKPOINTS[model] = write[model](workdir / model)
    return _CHECKPOINTS[model]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from Linux's /proc")
@pytest.mark.parametrize("row", range(len(ROWS)), ids=[f"{m}, {n}" for n, m, _ in ROWS])
def test_long_file(benchmark, workdir, whisper_base_dir, row):
    from importlib import metadata

    try:
        metadata.distribution("silero-vad")
    except metadata.PackageNotFoundError:
        pytest.skip("the VAD weights come from the silero-vad package")
    name, model, options = ROWS[row]
    seconds = QWEN_SECONDS if model == QWEN else SECONDS
    audio = workdir / f"long_{seconds}.wav"
    if not audio.exists():
        _write_long(audio, seconds)
    options = {**options, **(WHISPER_OPTIONS if model == WHISPER else {})}
    args = [model, str(_checkpoint(model, workdir, whisper_base_dir)), str(audio), str(FIXTURES / "en_short.wav")]

    def child():
        run = subprocess.run(
            [sys.executable, "-c", _CHILD, *args, json.dumps(options)], capture_output=True, text=True, timeout=7200
        )
        assert run.returncode == 0, run.stderr[-3000:]
        return json.loads(run.stdout.splitlines()[-1])

    out = benchmark.pedantic(child, rounds=1, iterations=1)
    group = f"{model}, {seconds / 60:g} min file ({len(ROWS)} rows in fresh processes), transcribe_file"
    baseline = ROWS[0][0] if model == WHISPER else name
    RESULTS.setdefault(group, (baseline, {}))[1][name] = out["secs"]
    vad = f", VAD RTF {out['timings']['vad'] / seconds:.4f}" if "vad" in out["timings"] else ""
    line = (
        f"{name}: RTF {out['secs'] / seconds:.4f}{vad}, peak RSS +{out['growth_mb']:.0f} MB over "
        f"{out['rss_mb']:.0f} MB (samples: {seconds * SAMPLE_RATE * 4 / 2**20:.0f} MB), "
        f"{out['chunks']} chunks, {out['words']} words"
    )
    note(group, line)
    print(f"\n{model}, {seconds:g} s, {line}", flush=True)  # with -s: each row as it ends (an hour takes long)
    benchmark.extra_info.update(out)
