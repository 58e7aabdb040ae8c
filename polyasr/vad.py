"""Voice activity detection: Silero VAD v6 on polyasr's backends (torch CPU / CUDA, MLX).

    from polyasr.vad import speech_timestamps
    speech_timestamps(samples)                  # [SpeechRegion(start=..., end=...), ...] in samples
    speech_timestamps(samples_8k, sample_rate=8000, threshold=0.6, device="mlx")

`speech_timestamps` has the parameters, defaults and results of silero-vad's
`get_speech_timestamps` (6.2): on 16 kHz input the same probabilities give the same samples.
Input at other rates is resampled to 16 kHz (soxr, as `polyasr.audio` does for the models) and the
regions are mapped back to the input's samples (start rounded down, end up). Silero itself runs a
separate 8 kHz network on 8 kHz input and decimates multiples of 16 kHz without a filter; the
weights it ships for other frameworks (`silero_vad_16k.safetensors`, the file read here) hold the
16 kHz network only. Stereo (or any channel count) is averaged to mono first.

The weights come from the `silero-vad` PyPI package (`pip install 'polyasr[vad]'`; without torch,
e.g. for MLX: `pip install --no-deps silero-vad`). polyasr reads its files with numpy and never
imports silero_vad: by default the weights of `silero_vad.jit` (the v6.2 model silero's
`load_silero_vad()` runs; its tensors only, through a restricted unpickler, never
`torch.jit.load`), or `silero_vad_16k.safetensors` with `load_vad(weights="safetensors")`, which
holds other weights for the same network (see `polyasr.models.silero_vad.weights`).
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from polyasr.audio import SAMPLE_RATE, load_audio, validate_samples
from polyasr.errors import InvalidOptionError


class SpeechRegion(NamedTuple):
    """A stretch of speech, [start, end) in samples of the audio as given."""

    start: int
    end: int


@dataclass(frozen=True)
class VadOptions:
    """silero-vad's `get_speech_timestamps` parameters and defaults.

    threshold: a window is speech when its probability is >= this.
    neg_threshold: inside speech, a window below this starts a pause (None: max(threshold - 0.15, 0.01)).
    min_speech_duration_ms: shorter regions are dropped.
    max_speech_duration_s: longer regions are cut at their longest pause of more than
        `min_silence_at_max_speech` ms (or, with `use_max_poss_sil_at_max_speech` off, at the last
        such pause), else where the limit is reached.
    min_silence_duration_ms: a pause this long ends a region.
    speech_pad_ms: regions are padded by this much on each side (neighbours meet halfway).
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_duration_ms: float = 250
    max_speech_duration_s: float = math.inf
    min_silence_duration_ms: float = 100
    speech_pad_ms: float = 30
    min_silence_at_max_speech: float = 98
    use_max_poss_sil_at_max_speech: bool = True

    def __post_init__(self):
        _check_range("threshold", self.threshold, 0.0, 1.0)
        if self.neg_threshold is not None:
            _check_range("neg_threshold", self.neg_threshold, 0.0, self.threshold, "threshold")
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms", "min_silence_at_max_speech"):
            _check_range(name, getattr(self, name), 0.0, math.inf)
        # silero cuts a region a window after it passes the limit and pads both sides of it after
        shortest = (512 + 2 * SAMPLE_RATE * self.speech_pad_ms / 1000) / SAMPLE_RATE
        if not self.max_speech_duration_s > shortest:
            raise InvalidOptionError(
                f"max_speech_duration_s must be more than one 32 ms window plus twice speech_pad_ms "
                f"({shortest:g} s), got {self.max_speech_duration_s}"
            )


def _check_range(name: str, value, lo: float, hi: float, hi_name: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not lo <= value <= hi:
        upper = f"{hi_name} ({hi:g})" if hi_name else f"{hi:g}"
        raise InvalidOptionError(f"{name} must be a number from {lo:g} to {upper}, got {value!r}")


# What `TranscribeOptions(vad=True)` uses unless told otherwise: faster-whisper's `vad_filter` defaults,
# which its users expect from a transcriber (silero's own defaults suit a detector: 30 ms of padding
# clips word edges, and a 100 ms pause would split a sentence into many pieces).
TRANSCRIBE_VAD = VadOptions(min_speech_duration_ms=0, min_silence_duration_ms=2000, speech_pad_ms=400)


@functools.lru_cache(maxsize=4)
def load_vad(device: str = "cpu", path: str | None = None, weights: str = "jit"):
    """The Silero VAD network on `device` ("cpu", "cuda", "mlx", "auto"), loaded once per process, in
    fp32. weights: which of the silero-vad package's files: "jit" (the v6.2 model silero's
    `load_silero_vad()` runs, read without torch) or "safetensors" (`silero_vad_16k.safetensors`,
    other weights; see `polyasr.models.silero_vad.weights`); path: a weights file of either kind."""
    from polyasr.backends import get_backend
    from polyasr.models.silero_vad.pipeline import SileroVAD

    return SileroVAD.load(get_backend(device, dtype="float32"), path, weights)


def speech_probabilities(audios, sample_rate: int = SAMPLE_RATE, *, device: str = "cpu", vad=None):
    """P(speech) of every 32 ms window (512 samples at 16 kHz) of each signal.

    audios: one signal or a list of them: (N,) / (N, C) / (C, N) arrays at `sample_rate`, or file
    paths (decoded at 16 kHz). Several signals run as one batch, each as if alone.
    Returns (ceil(N16 / 512),) float32 for one signal, a list of those for a list, N16 being the
    length at 16 kHz. vad: a `load_vad(...)` result, else one is loaded for `device`.
    """
    single = not isinstance(audios, (list, tuple))
    signals = [_signal(a, sample_rate) for a in ([audios] if single else audios)]
    vad = vad or load_vad(device)
    probs = vad.probabilities(signals)
    return probs[0] if single else probs


def speech_timestamps(
    audio,
    sample_rate: int = SAMPLE_RATE,
    threshold: float = 0.5,
    neg_threshold: float | None = None,
    min_speech_duration_ms: float = 250,
    min_silence_duration_ms: float = 100,
    speech_pad_ms: float = 30,
    max_speech_duration_s: float = math.inf,
    min_silence_at_max_speech: float = 98,
    use_max_poss_sil_at_max_speech: bool = True,
    *,
    device: str = "cpu",
    vad=None,
) -> list[SpeechRegion]:
    """Speech regions of one signal, in its own samples (a file path: samples at 16 kHz); see
    `VadOptions` for the parameters. No speech (silence, noise, an empty array) gives []."""
    opts = VadOptions(
        threshold=threshold,
        neg_threshold=neg_threshold,
        min_speech_duration_ms=min_speech_duration_ms,
        max_speech_duration_s=max_speech_duration_s,
        min_silence_duration_ms=min_silence_duration_ms,
        speech_pad_ms=speech_pad_ms,
        min_silence_at_max_speech=min_silence_at_max_speech,
        use_max_poss_sil_at_max_speech=use_max_poss_sil_at_max_speech,
    )
    return batch_speech_timestamps([audio], sample_rate, opts, device=device, vad=vad)[0]


def batch_speech_timestamps(
    audios: list, sample_rate: int = SAMPLE_RATE, options: VadOptions | None = None, *, device: str = "cpu", vad=None
) -> list[list[SpeechRegion]]:
    """`speech_timestamps` of several signals, their windows run as one batch."""
    from polyasr.models.silero_vad.pipeline import RegionRules, speech_regions

    opts = options or VadOptions()
    vad = vad or load_vad(device)
    signals = [_signal(a, sample_rate) for a in audios]
    rules = RegionRules.from_options(opts, vad.cfg)
    out = []
    for audio, signal, probs in zip(audios, signals, vad.probabilities(signals)):
        regions = speech_regions(probs, len(signal), rules, vad.cfg.num_samples)
        rate = SAMPLE_RATE if isinstance(audio, (str, os.PathLike)) else sample_rate
        out.append([_to_rate(r, rate, len(signal)) for r in regions])
    return out


def _signal(audio, sample_rate: int) -> np.ndarray:
    """A path or samples -> float32 mono at 16 kHz; empty samples stay empty (no speech in them)."""
    if isinstance(audio, (str, os.PathLike)):
        return load_audio(audio)
    if np.asarray(audio).size == 0:
        return np.zeros(0, dtype=np.float32)
    return validate_samples(audio, source_rate=sample_rate)


def _to_rate(region: tuple[int, int], rate: int, n16: int) -> SpeechRegion:
    """A region in 16 kHz samples -> in samples at `rate`, start rounded down, end up, within the input."""
    start, end = region
    if rate == SAMPLE_RATE:
        return SpeechRegion(start, end)
    n_in = -(-n16 * rate // SAMPLE_RATE)
    return SpeechRegion(start * rate // SAMPLE_RATE, min(-(-end * rate // SAMPLE_RATE), n_in))


# ---------------------------------------------------------------- `polyasr vad`


def add_cli_parser(sub) -> None:
    """The `vad` subcommand's arguments (cli.py registers it)."""
    v = sub.add_parser("vad", help="print the speech regions of audio files (Silero VAD), in seconds")
    v.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3)")
    defaults = VadOptions()
    v.add_argument("--threshold", type=float, default=defaults.threshold, help="speech threshold (default 0.5)")
    v.add_argument(
        "--neg-threshold", type=float, default=None, help="pause threshold inside speech (default threshold - 0.15)"
    )
    v.add_argument("--min-speech-duration-ms", type=float, default=defaults.min_speech_duration_ms)
    v.add_argument("--min-silence-duration-ms", type=float, default=defaults.min_silence_duration_ms)
    v.add_argument("--speech-pad-ms", type=float, default=defaults.speech_pad_ms)
    v.add_argument("--max-speech-duration-s", type=float, default=defaults.max_speech_duration_s)
    v.add_argument("--format", default="text", choices=("text", "json"), help="output format (default: text)")
    v.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mlx"), help="backend (default: cpu)")


def cmd_vad(args) -> int:
    """Regions of every file, batched; text: one `start end` line (seconds) per region under each file's name."""
    import json

    opts = VadOptions(
        threshold=args.threshold,
        neg_threshold=args.neg_threshold,
        min_speech_duration_ms=args.min_speech_duration_ms,
        max_speech_duration_s=args.max_speech_duration_s,
        min_silence_duration_ms=args.min_silence_duration_ms,
        speech_pad_ms=args.speech_pad_ms,
    )
    found = batch_speech_timestamps(list(args.audio), options=opts, device=args.device)
    seconds = [[(round(r.start / SAMPLE_RATE, 3), round(r.end / SAMPLE_RATE, 3)) for r in rs] for rs in found]
    if args.format == "json":
        files = [{"file": a, "regions": [{"start": s, "end": e} for s, e in rs]} for a, rs in zip(args.audio, seconds)]
        print(json.dumps(files, indent=2))
        return 0
    for path, regions in zip(args.audio, seconds):
        if len(args.audio) > 1:
            print(f"# {path}")
        for start, end in regions:
            print(f"{start:.3f} {end:.3f}")
    return 0
