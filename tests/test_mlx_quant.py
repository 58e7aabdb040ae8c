"""Weight quantisation on the MLX backend: `backends/mlx_quant.py`, its wiring into
`MLXBackend`, `get_backend`, `AsrEngine.from_model` and the CLI, and Whisper tiny.en on real weights
at 8 bits. Runs on `mlx[cpu]` on Linux. The WER cost on Whisper base is measured by
`bench/bench_mlx_quant.py`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

mx = pytest.importorskip("mlx.core")

from polyasr import AsrEngine, TranscribeOptions  # noqa: E402
from polyasr.backends import get_backend  # noqa: E402
from polyasr.backends.mlx import MLXBackend  # noqa: E402
from polyasr.backends.mlx_quant import (  # noqa: E402
    QuantizedWeight,
    check_quantization,
    quantize_linear,
    quantized_linear,
)
from polyasr.benchmark import word_error_rate  # noqa: E402
from polyasr.cli import _build_parser, main  # noqa: E402
from polyasr.errors import InvalidOptionError  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"

# Relative RMS error of y = x W^T with W quantised, for Gaussian W (std s) and independent x: each
# weight is off by a round-off spread uniformly over one step, RMS step / sqrt(12), with
# step = (group max - group min) / (2^bits - 1) ~ 4.8 s for 64 Gaussians (2 x 2.4 s; 4.1 s for 32,
# 5.2 s for 128). So 4-bit: 4.8 / 15 / 3.46 = 0.092 (g32 0.079, g128 0.100); 8-bit: 4.8 / 255 / 3.46
# = 0.0054 (g128 0.0059). Measured on these draws: 4-bit 0.083 (g32) .. 0.108 (g128), 8-bit 0.0057 ..
# 0.0060; the bounds leave 20-40% for mx's scale snapping and the spread of a 24k-weight sample.
REL_RMS_BOUND = {8: 0.008, 4: 0.13}


def _random_layer(cout=96, cin=256):
    rng = np.random.default_rng(0)  # the same draws whichever tests run before
    w = (rng.standard_normal((cout, cin)) * 0.05).astype(np.float32)
    x = rng.standard_normal((2, 5, cin)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    return mx.array(w), mx.array(x), mx.array(b)


@pytest.mark.parametrize("bits, group_size", [(8, 64), (8, 128), (4, 64), (4, 32), (4, 128)])
def test_quantized_linear_close_to_full_precision(bits, group_size):
    w, x, b = _random_layer()
    qw = quantize_linear(w, bits, group_size)
    assert isinstance(qw, QuantizedWeight)
    assert (qw.bits, qw.group_size, qw.in_features, qw.out_features) == (bits, group_size, 256, 96)
    assert qw.weight.dtype == mx.uint32 and qw.weight.shape == (96, 256 * bits // 32)
    assert qw.nbytes < w.nbytes * (bits / 32 + 0.07)  # packed weights + one scale and bias per group

    y, ref = np.array(quantized_linear(x, qw, b)), np.array(x @ w.T + b)
    # 1. the kernel computes exactly x @ dequantize(W)^T + b (layout, transpose, bits, group size wired right)
    w_hat = mx.dequantize(qw.weight, qw.scales, qw.biases, group_size=group_size, bits=bits)
    assert_close(y, np.array(x @ w_hat.T + b), reduction=256, what="quantized_linear vs dequantized matmul")
    # 2. hard bound: mx's affine rule stores the larger-magnitude group edge exactly as the bias and
    # snaps the scale s to it, so each weight is off by at most one step, (n + 1) / n |s| with
    # n = 2^bits - 1 in the worst case of the snap (measured: at most 1.0 |s|)
    n = 2**bits - 1
    step = np.repeat(np.abs(np.array(qw.scales)), group_size, axis=1) * (n + 1) / n  # (Cout, Cin)
    bound = np.abs(np.array(x)) @ step.T + 1e-5
    assert (np.abs(y - ref) <= bound).all()
    # 3. the typical error, as derived above
    rel = np.sqrt(np.mean((y - ref) ** 2) / np.mean((ref - np.array(b)) ** 2))
    assert rel < REL_RMS_BOUND[bits], f"{bits}-bit g{group_size}: relative RMS error {rel:.4f}"


def test_eight_bits_much_tighter_than_four():
    w, x, _ = _random_layer()
    ref = np.array(x @ w.T)
    err = {
        bits: np.sqrt(np.mean((np.array(quantized_linear(x, quantize_linear(w, bits, 64))) - ref) ** 2))
        for bits in (4, 8)
    }
    assert err[8] < err[4] / 10  # the step shrinks 255 / 15 = 17x


def test_layer_with_cin_not_a_multiple_of_group_size_stays_full_precision():
    assert quantize_linear(mx.zeros((16, 80)), 8, 64) is None  # 80 = 64 + a partial group
    assert quantize_linear(mx.zeros((16, 80)), 8, 32) is None
    assert quantize_linear(mx.zeros((16, 96)), 8, 32) is not None

    B = MLXBackend(quantize=8, group_size=64)
    w_kept, x_kept, b_kept = _random_layer(16, 80)
    kept = B.prepare_linear(w_kept)
    assert isinstance(kept, mx.array) and kept.shape == (80, 16)  # the usual (Cin, Cout) fp layout
    assert_close(np.array(B.linear(x_kept, kept, b_kept)), np.array(x_kept @ w_kept.T + b_kept), reduction=16)
    w, x, b = _random_layer(16, 128)
    quantised = B.prepare_linear(w)
    assert isinstance(quantised, QuantizedWeight)
    np.testing.assert_array_equal(np.array(B.linear(x, quantised, b)), np.array(quantized_linear(x, quantised, b)))
    assert (B.quantized_layers, B.full_precision_layers) == (1, 1)
    assert "quantize=8bit-g64" in repr(B) and B.quantization == "8bit-g64"


def test_without_quantize_the_backend_is_unchanged():
    B = MLXBackend()
    w, x, b = _random_layer(16, 128)
    prepared = B.prepare_linear(w)
    assert isinstance(prepared, mx.array) and prepared.shape == (128, 16)
    assert B.quantization is None and (B.quantized_layers, B.full_precision_layers) == (0, 1)
    assert "quantize" not in repr(B)


@pytest.mark.parametrize(
    "bits, group_size, fragment",
    [
        (5, 64, "quantize=5"),
        (16, 64, "quantize=16"),
        (1, 64, "quantize=1"),
        # widths mx.quantize takes but polyasr does not offer (the CLI and README say 4 or 8)
        (2, 64, "quantize=2"),
        (3, 64, "quantize=3"),
        (6, 64, "quantize=6"),
        (8, 48, "group_size=48"),
        (4, 256, "group_size=256"),
    ],
)
def test_bad_bits_or_group_size(bits, group_size, fragment):
    for make in (
        lambda: check_quantization(bits, group_size),
        lambda: MLXBackend(quantize=bits, group_size=group_size),
        lambda: get_backend("mlx", quantize=bits, group_size=group_size),
    ):
        with pytest.raises(InvalidOptionError) as e:
            make()
        msg = str(e.value)
        assert fragment in msg and "\n" not in msg and "use one of" in msg, msg


def test_quantize_on_torch_is_the_torch_scheme():
    for device in ("cpu", "auto"):  # auto is cpu on this Linux machine; tests/test_torch_quant.py covers it
        assert get_backend(device, quantize=8).quantization == "8bit-channel"


@pytest.mark.slow
def test_whisper_tiny_en_8bit_transcribes(whisper_tiny_en_dir):
    """8-bit g64 on real tiny.en weights: every one of its 45 linears (Cin 384 or 1536) quantised,
    and WER on en_short.wav at most 1/17 (one of the reference's 17 words; measured 0, as fp32)."""
    engine = AsrEngine.from_model("whisper-tiny.en", whisper_tiny_en_dir, device="mlx", quantize=8)
    r = engine.transcribe_file(FIXTURES / "en_short.wav", TranscribeOptions(temperatures=(0.0,), beam_size=1))
    reference = (FIXTURES / "en_short.txt").read_text(encoding="utf-8")
    assert word_error_rate(reference, r.text) <= 1 / 17, r.text
    assert r.info["quantize"] == "8bit-g64"
    assert (r.info["quantized_layers"], r.info["full_precision_layers"]) == (45, 0)
    assert r.info["device"].startswith("mlx")


# ---- CLI ----------------------------------------------------------------------------------------


def _user_error(capsys, argv, exit_code, *fragments):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("polyasr: error: "), err
    assert code == exit_code, lines[0]
    assert all(f in lines[0] for f in fragments), lines[0]


def test_cli_parses_quantize_flags():
    parser = _build_parser()
    args = parser.parse_args(["transcribe", "a.wav", "--device", "mlx", "--quantize", "4", "--group-size", "32"])
    assert (args.quantize, args.group_size) == (4, 32)
    args = parser.parse_args(["benchmark", "--audio", "a.wav", "--quantize", "8"])
    assert (args.quantize, args.group_size) == (8, None)
    args = parser.parse_args(["transcribe", "a.wav"])
    assert (args.quantize, args.group_size) == (None, None)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["transcribe", "a.wav", "--quantize", "eight"])
    assert e.value.code == 2


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["transcribe", FIXTURES / "en_short.wav", "--device", "mlx", "--quantize", "8"],
            {"quantize": 8, "group_size": 64},
        ),
        (
            ["transcribe", FIXTURES / "en_short.wav", "--device", "mlx", "--quantize", "4", "--group-size", "128"],
            {"quantize": 4, "group_size": 128},
        ),
        (["transcribe", FIXTURES / "en_short.wav", "--device", "mlx"], {}),
        (
            [
                "benchmark",
                "--audio",
                FIXTURES / "en_short.wav",
                "--device",
                "mlx",
                "--quantize",
                "4",
                "--group-size",
                "32",
            ],
            {"quantize": 4, "group_size": 32},
        ),
    ],
)
def test_cli_passes_quantize_to_the_engine(capsys, monkeypatch, argv, expected):
    seen = {}

    def from_model(cls, model, path=None, **kw):
        seen.update({k: kw[k] for k in ("quantize", "group_size") if k in kw})
        raise InvalidOptionError("stop here")  # what the CLI passed is all this test looks at

    monkeypatch.setattr(AsrEngine, "from_model", classmethod(from_model))
    _user_error(capsys, argv, 2, "stop here")
    assert seen == expected


def test_cli_group_size_without_quantize(capsys):
    _user_error(
        capsys, ["transcribe", FIXTURES / "en_short.wav", "--group-size", "32"], 2, "--group-size", "--quantize"
    )
    _user_error(capsys, ["benchmark", "--audio", FIXTURES / "en_short.wav", "--group-size", "32"], 2, "--quantize")


@pytest.mark.parametrize(
    "extra, exit_code, fragments",
    [
        (["--device", "mlx", "--quantize", "5"], 2, ("quantize=5", "4 or 8")),
        (["--device", "mlx", "--quantize", "8", "--group-size", "100"], 2, ("group_size=100", "32, 64, 128")),
        (["--device", "cpu", "--quantize", "3"], 2, ("quantize=3", "4 or 8")),
    ],
)
def test_cli_bad_quantize_values(capsys, whisper_tiny_en_dir, extra, exit_code, fragments):
    # refused when the backend is made, before any weight is read
    _user_error(
        capsys,
        [
            "transcribe",
            FIXTURES / "en_short.wav",
            "--model",
            "whisper-tiny.en",
            "--model-path",
            whisper_tiny_en_dir,
            *extra,
        ],
        exit_code,
        *fragments,
    )
