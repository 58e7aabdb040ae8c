"""Data for the `polyasr batch` tests: a random-weight GigaAM checkpoint (fast on two cores; what is
checked is what the job does with files, not what the model hears) and datasets cut from the fixtures."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent / "models"))  # the model tests' checkpoint writers

FIXTURES = Path(__file__).parent / "fixtures"
RTF = re.compile(rb'"rtf": [^,]+, ')  # the one timing field of a record


def gigaam_checkpoint(path: Path) -> Path:
    """A tiny random GigaAM v3 CTC in the released .ckpt layout."""
    import torch
    from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

    torch.manual_seed(0)
    cfg = tiny_cfg()
    return save_ckpt(path, cfg, v3_state_dict(cfg))


def mixed_directory(root: Path) -> Path:
    """Good files in three formats and two levels, plus a truncated WAV and an empty one."""
    (root / "sub").mkdir(parents=True)
    for name in ("ru_short.wav", "en_short.ogg", "noise.flac"):
        shutil.copy(FIXTURES / name, root / name)
    shutil.copy(FIXTURES / "silence.wav", root / "sub" / "silence.wav")
    (root / "sub" / "corrupt.wav").write_bytes((FIXTURES / "en_short.wav").read_bytes()[:3000])
    (root / "sub" / "empty.wav").write_bytes(b"")
    return root


def clips(root: Path, count: int, secs: float) -> list[Path]:
    """`count` distinct WAV clips of `secs` seconds cut from ru_short.wav at successive offsets."""
    audio, rate = sf.read(FIXTURES / "ru_short.wav", dtype="float32")
    n = int(secs * rate)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        start = (i * 797) % (len(audio) - n)
        path = root / f"clip{i:04d}.wav"
        sf.write(path, np.ascontiguousarray(audio[start : start + n]), rate, subtype="PCM_16")
        paths.append(path)
    return paths


def lines_without_timing(path: Path) -> list[bytes]:
    """A JSONL output's lines with the rtf field cut out, sorted by content (Ray finishes in any order)."""
    return sorted(RTF.sub(b"", line) for line in path.read_bytes().splitlines())
