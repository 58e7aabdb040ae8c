"""`polyasr batch --ray` on a local Ray instance with 2 CPUs, started once for the module: the same
records as the local path, and a 1,000-entry manifest streamed through a small object store.

The model is a random-weight tiny GigaAM (fast on two cores): what is checked is the pipeline
(every input once, the same bytes as locally, memory bounded), not what the model hears.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batch_data import clips, gigaam_checkpoint, lines_without_timing, mixed_directory

from polyasr.cli import main

ray = pytest.importorskip("ray")
pytest.importorskip("omegaconf")  # only to write the released GigaAM layout

OBJECT_STORE_BYTES = 96 * 2**20  # smaller than the decoded audio of the 1,000-entry manifest


@pytest.fixture(scope="module")
def spill_dir(tmp_path_factory) -> Path:
    """Where Ray spills objects that do not fit its store; empty while memory stays bounded."""
    return tmp_path_factory.mktemp("ray-spill")


@pytest.fixture(scope="module")
def local_ray(spill_dir):
    spilling = {"type": "filesystem", "params": {"directory_path": str(spill_dir)}}
    ray.init(
        num_cpus=2,
        object_store_memory=OBJECT_STORE_BYTES,
        include_dashboard=False,
        log_to_driver=False,
        _system_config={"object_spilling_config": json.dumps(spilling)},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return gigaam_checkpoint(tmp_path_factory.mktemp("gigaam") / "v3_ctc.ckpt")


def _batch(ckpt, source, output, *extra) -> list[str]:
    return ["batch", str(source), "--model", "gigaam-v3-ctc", "--model-path", str(ckpt), "--device", "cpu",
            "--output", str(output), *map(str, extra)]  # fmt: skip


@pytest.mark.slow  # starting Ray takes most of it
def test_ray_writes_the_same_records_as_the_local_path(local_ray, ckpt, tmp_path, capsys):
    data = mixed_directory(tmp_path / "data")
    assert main(_batch(ckpt, data, tmp_path / "local.jsonl")) == 3
    assert main(_batch(ckpt, data, tmp_path / "ray.jsonl", "--ray", "--num-workers", "1")) == 3
    assert "polyasr: 2 of 6 files failed" in capsys.readouterr().err
    local, remote = lines_without_timing(tmp_path / "local.jsonl"), lines_without_timing(tmp_path / "ray.jsonl")
    assert len(local) == 6 and remote == local
    errors = [json.loads(line)["error"] for line in remote]
    assert sum(e is not None for e in errors) == 2


@pytest.mark.slow
def test_thousand_entry_manifest_streams_through_a_small_object_store(local_ray, spill_dir, ckpt, tmp_path, capsys):
    """1,000 two-second clips decode to 128 MB of float32, more than the 96 MB object store: Ray
    Data's backpressure must keep only a few blocks in flight (nothing spilled to disk)."""
    paths = clips(tmp_path / "clips", 1000, secs=2.0)
    manifest = tmp_path / "manifest.json"
    rows = [{"audio_filepath": f"clips/{p.name}", "duration": 2.0, "text": ""} for p in paths]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    decoded_bytes = 1000 * 2 * 16000 * 4
    assert decoded_bytes > OBJECT_STORE_BYTES
    out = tmp_path / "out.jsonl"
    assert main(_batch(ckpt, manifest, out, "--ray", "--num-workers", "1", "--batch-size", "8")) == 0
    assert "1000 files transcribed, 0 failed" in capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["path"] for r in records) == sorted(str(p) for p in paths)
    assert all(r["error"] is None and r["duration"] == 2.0 for r in records)
    assert not [p for p in spill_dir.rglob("*") if p.is_file()], (
        "Ray spilled objects to disk: the pipeline held more than its store"
    )
