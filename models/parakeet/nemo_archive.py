"""Reading a NeMo `.nemo` archive safely.

A `.nemo` file is a tar (plain or gzip) holding `model_config.yaml`, `model_weights.ckpt` (a
torch state dict) and the tokenizer's files, whose names NeMo prefixes with a hash
(`1a2b..._tokenizer.model`) and which the config names as `nemo:<member>`.

An archive comes from the internet, so nothing in it is trusted:
* every member is checked before anything is read: no absolute paths, no `..`, no links,
  devices or FIFOs, bounded sizes and member count; one bad member refuses the whole archive;
* only the members we need are read, through `extractfile`, and written under names we make
  (never the archive's paths) inside a fresh temporary directory;
* the config is parsed with `yaml.safe_load` (no tags, no objects); the weights are loaded with
  `torch.load(weights_only=True)` by `checkpoint_io.read_torch_weights`.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from polyasr.errors import CheckpointError
from polyasr.models.checkpoint_io import parse_config

MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 16 << 30  # a 1.1B-parameter fp32 checkpoint is ~4.5 GB
MAX_SMALL_BYTES = 64 << 20  # config and tokenizer files
CONFIG = "model_config.yaml"
WEIGHTS = "model_weights.ckpt"


@dataclass
class NemoContents:
    """What a `.nemo` archive holds, read: the config as plain dicts, the tokenizer model's bytes
    (None if the archive has none) and the weights file extracted into `workdir`."""

    config: dict
    tokenizer_model: bytes | None
    weights_path: Path
    workdir: tempfile.TemporaryDirectory


def _normalised(name: str) -> str:
    return str(PurePosixPath(name.replace("\\", "/"))).removeprefix("./")


def check_members(archive: Path, members: list[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    """Every member safe, or CheckpointError naming the first one that is not; -> {name: member}."""
    if len(members) > MAX_MEMBERS:
        raise CheckpointError(f"{archive}: {len(members)} members is more than a model archive holds")
    files = {}
    for m in members:
        name = m.name.replace("\\", "/")
        if name.startswith("/") or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
            raise CheckpointError(f"{archive}: refusing an archive with an absolute member path {m.name!r}")
        if ".." in PurePosixPath(name).parts:
            raise CheckpointError(f"{archive}: refusing an archive with a member outside it ({m.name!r})")
        if m.issym() or m.islnk():
            raise CheckpointError(f"{archive}: refusing an archive with a link member {m.name!r} -> {m.linkname!r}")
        if not (m.isfile() or m.isdir()):
            raise CheckpointError(
                f"{archive}: refusing an archive with a special member {m.name!r} (device, FIFO or unknown type)"
            )
        if m.size < 0 or m.size > MAX_MEMBER_BYTES:
            raise CheckpointError(f"{archive}: member {m.name!r} is {m.size} bytes, over the {MAX_MEMBER_BYTES} limit")
        if m.isfile():
            files[_normalised(name)] = m
    return files


def _find(files: dict[str, tarfile.TarInfo], wanted: str) -> tarfile.TarInfo | None:
    """A member by its name at the top level or in any folder (NeMo archives may nest one level)."""
    if wanted in files:
        return files[wanted]
    matches = [m for n, m in files.items() if PurePosixPath(n).name == wanted]
    return matches[0] if len(matches) == 1 else None


def _read_small(tar: tarfile.TarFile, archive: Path, member: tarfile.TarInfo) -> bytes:
    if member.size > MAX_SMALL_BYTES:
        raise CheckpointError(f"{archive}: {member.name!r} is {member.size} bytes, too large for a config/tokenizer")
    f = tar.extractfile(member)
    if f is None:
        raise CheckpointError(f"{archive}: cannot read member {member.name!r}")
    return f.read()


def _tokenizer_member(files, config: dict) -> tarfile.TarInfo | None:
    """The SentencePiece model the config names (`tokenizer.model_path: nemo:<member>`), or the one
    `*tokenizer.model` member."""
    path = str((config.get("tokenizer") or {}).get("model_path") or "")
    if path:
        member = _find(files, PurePosixPath(path.removeprefix("nemo:")).name)
        if member is not None:
            return member
    candidates = [m for n, m in files.items() if n.endswith("tokenizer.model")]
    return candidates[0] if len(candidates) == 1 else None


def read_nemo(archive: str | os.PathLike) -> NemoContents:
    """Open `archive`, check it, parse its config and extract its weights into a temporary directory."""
    archive = Path(archive)
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise CheckpointError(f"{archive}: not a readable .nemo (tar) archive ({e})") from e
    with tar:
        try:
            files = check_members(archive, tar.getmembers())
        except tarfile.TarError as e:
            raise CheckpointError(f"{archive}: corrupt .nemo archive ({e})") from e
        config_member, weights_member = _find(files, CONFIG), _find(files, WEIGHTS)
        missing = [n for n, m in ((CONFIG, config_member), (WEIGHTS, weights_member)) if m is None]
        if missing:
            raise CheckpointError(
                f"{archive}: .nemo archive lacks {', '.join(missing)} "
                f"(it has: {', '.join(sorted(files)) or 'no files'})"
            )
        config = parse_config(_read_small(tar, archive, config_member), f"{archive}: {CONFIG}", "yaml")
        tok = _tokenizer_member(files, config)
        tokenizer = _read_small(tar, archive, tok) if tok is not None else None
        workdir = tempfile.TemporaryDirectory(prefix="polyasr-nemo-")
        weights_path = Path(workdir.name) / WEIGHTS  # our name, not the archive's path
        src = tar.extractfile(weights_member)
        with open(weights_path, "wb") as out:
            while chunk := src.read(1 << 24):
                out.write(chunk)
    return NemoContents(config, tokenizer, weights_path, workdir)
