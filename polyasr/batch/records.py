"""What `polyasr batch` writes, and how a job resumes from it.

One record per input file, the same from the local and the Ray path:
  {"path", "model", "text", "segments", "language", "duration", "rtf", "error"}
A failed file has `error` ("AudioDecodeError: <path>: <why>") and null text / language / duration / rtf.

Writes never leave half a record behind, whatever kills the process:
  JSONL (`--format jsonl`, OUT a file): each record is one `os.write` of a whole line on an
    O_APPEND descriptor, then fsync. A kill can at worst leave the last line torn; resuming drops it
    (truncates the file to its last complete line) and transcribes that file again.
  one file per input (OUT a directory): written to a temporary file beside it, fsynced, then
    `os.replace`d into place, so the output exists whole or not at all. Failed files go to
    OUT/errors.jsonl as JSONL records.
`--resume` skips every input with a record (success or error) or an output file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

from polyasr.errors import InvalidOptionError
from polyasr.outputs import EXTENSIONS, format_result
from polyasr.result import TranscriptionResult

# --format of `batch` -> the outputs.py format written per file (None: one JSONL file)
BATCH_FORMATS = {"jsonl": None, "json": "json", "srt": "srt", "vtt": "vtt", "txt": "text"}
ERRORS_FILE = "errors.jsonl"
TIMING_FIELDS = ("rtf",)  # differ run to run; everything else in a record is a function of the input


def result_record(path: str, model: str, result: TranscriptionResult) -> dict:
    return {
        "path": path,
        "model": model,
        "text": result.text,
        "segments": [dataclasses.asdict(s) for s in result.segments],
        "language": result.language,
        "duration": result.audio_duration_secs,
        "rtf": result.rtf,
        "error": None,
    }


def describe(error: BaseException) -> str:
    """An exception as one line of a record: "AudioDecodeError: <path>: <why>"."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def error_record(path: str, model: str, error: str) -> dict:
    """error: `describe`'s line."""
    return {
        "path": path,
        "model": model,
        "text": None,
        "segments": [],
        "language": None,
        "duration": None,
        "rtf": None,
        "error": error,
    }


def render(result: TranscriptionResult, fmt: str) -> str | None:
    """The per-file output of `result` in batch format `fmt`; None for JSONL (the record is the output)."""
    per_file = BATCH_FORMATS[fmt]
    return None if per_file is None else format_result(result, per_file)


def record_line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")


class JsonlFile:
    """An append-only JSONL file of records: one write + fsync per whole line."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict):
        data = memoryview(record_line(record))
        while data:  # a regular file takes it in one write; the loop covers a signal-interrupted one
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)

    def close(self):
        os.close(self._fd)


def read_records(path: Path) -> list[dict]:
    """The complete records of a JSONL output. A torn last line (no newline, or not JSON: the
    process died inside the write) is cut off the file so that appending continues cleanly."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    records = []
    for number, line in enumerate(data[:end].splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError as e:
            raise InvalidOptionError(
                f"{path}:{number} is not a polyasr record ({e}); it is not this job's output, choose another --output"
            ) from e
        if not isinstance(record, dict) or "path" not in record:
            raise InvalidOptionError(f"{path}:{number} is not a polyasr record (no 'path'); choose another --output")
        records.append(record)
    return records


def output_names(paths: list[str], out_dir: Path, fmt: str) -> dict[str, Path]:
    """input path -> its output file: the input's place under the inputs' common directory, mirrored
    under `out_dir`, with the format's extension in place of the audio one (`a.wav` -> `a.srt`); when
    two inputs would meet (a.wav, a.ogg) both keep their whole name (`a.wav.srt`, `a.ogg.srt`)."""
    if not paths:
        return {}
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    ext = EXTENSIONS[BATCH_FORMATS[fmt]]
    relative = [Path(os.path.relpath(p, root)) for p in absolute]
    short = [r.with_suffix(f".{ext}") for r in relative]
    taken: dict[Path, int] = {}
    for s in short:
        taken[s] = taken.get(s, 0) + 1
    return {
        p: out_dir / (s if taken[s] == 1 else r.with_name(f"{r.name}.{ext}")) for p, r, s in zip(paths, relative, short)
    }


def write_atomically(dest: Path, text: str):
    """`text` into `dest` whole or not at all: a temporary file in the same directory, fsync, os.replace."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Sink:
    """Where a job's records go: `done` says what a resumed job skips, `write` stores one record
    (with its rendered output, for per-file formats), `close` ends the job."""

    def __init__(self, out: Path, fmt: str, inputs: list[str], resume: bool):
        if fmt not in BATCH_FORMATS:
            raise InvalidOptionError(f"--format {fmt!r}: choose one of {', '.join(BATCH_FORMATS)}")
        self.fmt = fmt
        self.per_file = BATCH_FORMATS[fmt] is not None
        _check_output(out, self.per_file, resume)
        self.names = output_names(inputs, out, fmt) if self.per_file else {}
        self.jsonl_path = out / ERRORS_FILE if self.per_file else out
        records = read_records(self.jsonl_path) if resume else []
        self.done = {r["path"] for r in records}
        self.failed_before = len({r["path"] for r in records if r.get("error")})
        if self.per_file and resume:
            self.done |= {p for p, dest in self.names.items() if dest.exists()}
        self._jsonl = None

    def write(self, record: dict, rendered: str | None = None):
        """rendered: the file's output in the per-file format (`render`), for a record without error."""
        if self.per_file and record["error"] is None:
            write_atomically(self.names[record["path"]], rendered)
            return
        if self._jsonl is None:
            self._jsonl = JsonlFile(self.jsonl_path)
        self._jsonl.append(record)

    def close(self):
        if self._jsonl is not None:
            self._jsonl.close()


def _check_output(out: Path, per_file: bool, resume: bool):
    """A new job must not mix its records into an old job's; --resume is how to continue one."""
    if per_file and out.exists() and not out.is_dir():
        raise InvalidOptionError(f"--output {out} is a file; one file per input needs a directory")
    if not per_file and out.is_dir():
        raise InvalidOptionError(f"--output {out} is a directory; --format jsonl writes one file (e.g. out.jsonl)")
    started = out.exists() and (any(out.iterdir()) if out.is_dir() else out.stat().st_size > 0)
    if started and not resume:
        raise InvalidOptionError(f"--output {out} already holds results; pass --resume to continue that job")
