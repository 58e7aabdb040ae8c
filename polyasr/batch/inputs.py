"""What `polyasr batch` transcribes: a directory, a list of paths, or a JSONL / CSV manifest -> audio paths.

INPUT is read as
  a directory        every file under it (recursively) whose extension is an audio one, sorted;
  `*.jsonl`/`*.json` one JSON object per line with a path column (`audio_filepath`, NeMo's name,
                     or `path` / `audio` / `file`); NeMo manifests are accepted as they are;
  `*.csv` / `*.tsv`  a header row naming one of those columns;
  anything else      a text file of paths, one per line (blank lines and `#` comments skipped).
Relative paths in a list or manifest are relative to the directory of that file (as NeMo reads
them), so a dataset moves with its manifest. A path listed twice is transcribed once.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from polyasr.errors import InvalidOptionError

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aiff", ".aif", ".au", ".webm"})
PATH_COLUMNS = ("audio_filepath", "path", "audio", "file", "filename")


class ManifestError(InvalidOptionError):
    """A line of the input list or manifest cannot be read; the message names the file and line."""


def read_inputs(source: str | os.PathLike) -> list[str]:
    """INPUT -> the audio paths to transcribe, in order, each once (see the module docstring)."""
    src = Path(source)
    if not src.exists():
        raise InvalidOptionError(f"INPUT {src} does not exist; pass a directory, a list of paths or a manifest")
    if src.is_dir():
        paths = _scan_directory(src)
        if not paths:
            extensions = " ".join(sorted(AUDIO_EXTENSIONS))
            raise InvalidOptionError(f"INPUT directory {src} holds no audio files (looked for {extensions})")
        return paths
    suffix = src.suffix.lower()
    if suffix in (".jsonl", ".json"):
        paths = _read_jsonl(src)
    elif suffix in (".csv", ".tsv"):
        paths = _read_csv(src, "\t" if suffix == ".tsv" else ",")
    else:
        paths = _read_path_list(src)
    if not paths:
        raise InvalidOptionError(f"INPUT {src} lists no audio files")
    return list(dict.fromkeys(paths))


def _scan_directory(root: Path) -> list[str]:
    found = []
    for directory, subdirs, files in os.walk(root, followlinks=True):
        subdirs.sort()
        found += [os.path.join(directory, f) for f in sorted(files) if Path(f).suffix.lower() in AUDIO_EXTENSIONS]
    return found


def _resolve(listing: Path, entry: str) -> str:
    """A path as listed -> the path to open: relative ones are taken from the listing file's directory."""
    path = Path(os.path.expanduser(entry))
    return str(path if path.is_absolute() else listing.parent / path)


def _read_path_list(src: Path) -> list[str]:
    paths = []
    for number, line in enumerate(_lines(src), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry.startswith(("{", "[")):
            raise ManifestError(
                f"{src}:{number}: looks like JSON in a list of paths; name a JSON-lines manifest *.jsonl"
            )
        paths.append(_resolve(src, entry))
    return paths


def _read_jsonl(src: Path) -> list[str]:
    paths = []
    for number, line in enumerate(_lines(src), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{src}:{number}: not a JSON object ({e.msg}); each line must be one object") from e
        if not isinstance(row, dict):
            raise ManifestError(f"{src}:{number}: a JSON {type(row).__name__}, not an object with a path column")
        paths.append(_resolve(src, _path_field(row, src, number)))
    return paths


def _read_csv(src: Path, delimiter: str) -> list[str]:
    with open(src, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        column = next((c for c in PATH_COLUMNS if c in (reader.fieldnames or ())), None)
        if column is None:
            raise ManifestError(
                f"{src}:1: the header {reader.fieldnames} has no path column; name one of {', '.join(PATH_COLUMNS)}"
            )
        paths = []
        for row in reader:
            value = (row.get(column) or "").strip()
            if not value:
                raise ManifestError(f"{src}:{reader.line_num}: empty {column!r}; every row needs an audio path")
            paths.append(_resolve(src, value))
        return paths


def _path_field(row: dict, src: Path, number: int) -> str:
    for column in PATH_COLUMNS:
        value = row.get(column)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise ManifestError(f"{src}:{number}: no audio path; give one of the keys {', '.join(PATH_COLUMNS)}")


def _lines(src: Path) -> list[str]:
    try:
        return src.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise ManifestError(
            f"{src}: not UTF-8 text (byte {e.start}); pass a directory, a path list or a manifest"
        ) from e
