"""The two steps of a batch job, shared by the local and the Ray path so both write the same records:
`decode` (a path -> samples, or the error that stops it) and `transcribe_group` (decoded files ->
one record each)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polyasr.audio import load_audio
from polyasr.batch.records import describe, error_record, render, result_record
from polyasr.options import TranscribeOptions


@dataclass
class Decoded:
    """One input after reading: samples (N,) float32 at 16 kHz, or the error that stopped the read
    (`records.describe`'s line: it crosses process boundaries as text)."""

    path: str
    audio: np.ndarray | None = None
    error: str | None = None


def decode(path: str) -> Decoded:
    """Read and decode `path`; any failure (missing, corrupt, empty, unreadable) is kept, not raised,
    because one bad file must not stop the job."""
    try:
        return Decoded(path, audio=load_audio(path))
    except Exception as e:  # noqa: BLE001 - whatever a decoder raises on a bad file becomes its record
        return Decoded(path, error=describe(e))


def group_size(engine, options: TranscribeOptions) -> int:
    """Files handed to the engine together: `batch_size` when the model batches across files, else 1."""
    return options.batch_size if engine.model.capabilities.batched_inputs else 1


def transcribe_group(engine, items: list[Decoded], options: TranscribeOptions, fmt: str) -> list[tuple[dict, str]]:
    """Decoded files -> (record, per-file output or None) each, in order.

    Good files go to the engine together (`transcribe_files`, which batches when the model can); if
    that call fails, each file is retried alone so that only the file at fault gets an error record.
    """
    model = engine.spec.id
    good = [item for item in items if item.error is None]
    results: dict[str, object] = {}
    if len(good) > 1:
        try:
            results = dict(zip((g.path for g in good), engine.transcribe_files([g.audio for g in good], options)))
        except Exception:  # noqa: BLE001 - fall through to one by one
            results = {}
    out = []
    for item in items:
        if item.error is not None:
            out.append((error_record(item.path, model, item.error), None))
            continue
        try:
            result = results.get(item.path) or engine.transcribe(item.audio, options, name=item.path)
        except Exception as e:  # noqa: BLE001 - a model failure on one file is that file's record
            out.append((error_record(item.path, model, describe(e)), None))
            continue
        out.append((result_record(item.path, model, result), render(result, fmt)))
    return out
