"""Weight quantisation on the torch backend (`backends/torch_quant.py`): the schemes' error bounds,
every compute path against its spec, the layer selection and its wiring (`get_backend`, `AsrEngine`,
the CLI), WER on real Whisper weights, and token agreement on the four model families at random
weights. The CUDA paths run only where a GPU is (marked `gpu`)."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_close

from polyasr import AsrEngine, TranscribeOptions
from polyasr.audio import load_audio
from polyasr.backends import get_backend
from polyasr.backends import torch_quant as tq
from polyasr.benchmark import word_error_rate
from polyasr.cli import main
from polyasr.errors import InvalidOptionError

sys.path.insert(0, str(Path(__file__).parent / "models"))  # the model tests' checkpoint writers

FIXTURES = Path(__file__).parent / "fixtures"
EPS32 = float(torch.finfo(torch.float32).eps)


def _layer(cout=96, cin=256, m=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, cin, generator=g) * 0.05
    w[3] *= 20  # one loud row: per-channel scales must not let it coarsen the others
    x = torch.randn(2, m, cin, generator=g)
    return w, x, torch.randn(cout, generator=g)


def _quantizer(bits, group_size=64, compute=None):
    q = tq.Quantizer(bits, group_size, torch.device("cpu"), torch.float32)
    if compute is not None:
        q.compute = compute
    return q


# ---- the schemes ---------------------------------------------------------------------------------
def test_int8_round_trip_within_half_a_step_per_channel():
    w, _, _ = _layer()
    q, s = tq.quantize_int8(w)
    assert q.dtype == torch.int8 and s.shape == (96,) and int(q.abs().max()) <= 127
    err = (w - q.float() * s[:, None]).abs()
    # round-to-nearest: half a step, plus the fp32 rounding of w / s and q * s (a few ulps of |w|)
    assert (err <= s[:, None] / 2 + 4 * EPS32 * w.abs()).all()
    assert (q.abs().amax(dim=1) == 127).all()  # each row's largest weight sits on the grid's edge


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_round_trip_within_half_a_step_per_group(group_size):
    w, _, _ = _layer()
    q, s, lo = tq.quantize_int4(w, group_size)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15 and s.shape == lo.shape == (96, 256 // group_size)
    step = s.repeat_interleave(group_size, dim=1)
    dq = q.float() * step + lo.repeat_interleave(group_size, dim=1)
    assert ((w - dq).abs() <= step / 2 + 4 * EPS32 * w.abs().amax()).all()
    assert torch.equal(tq.unpack_int4(tq.pack_int4(q)), q)


def test_constant_rows_and_groups_are_exact():
    w = torch.zeros(4, 64)
    w[1] = 0.5
    q8, s8 = tq.quantize_int8(w)
    assert torch.equal(q8.float() * s8[:, None], w)
    q4, s4, lo = tq.quantize_int4(w, 32)
    assert torch.equal(q4.float() * s4.repeat_interleave(32, 1) + lo.repeat_interleave(32, 1), w)


# ---- the compute paths against their spec ----------------------------------------------------------
@pytest.mark.parametrize("bits, compute", [(8, "dequantize"), (4, "dequantize")])
def test_weight_only_matmul_equals_x_at_dequantized_weight(bits, compute):
    w, x, b = _layer()
    qw = _quantizer(bits, compute=compute).quantize(w)
    ref = tq.quantized_linear_reference(x, qw, b)
    # fp32 GEMM vs fp32 GEMM of the same operands, K = 256 terms of |x w| <~ 3 * 1: reassociation only
    assert_close(qw.linear(x, b), ref, atol=256 * EPS32 * 8, what=f"{bits}-bit weight-only")


@pytest.mark.parametrize("bits, m", [(8, 1), (8, 5), (8, 33), (4, 1), (4, 5), (4, 40)])
def test_int8_dynamic_matmul_equals_its_spec(bits, m):
    """The int8 GEMMs compute exactly x_dq @ dequantize(W)^T, x_dq = each row of x quantised to int8 with
    its own scale; and their distance from x @ dequantize(W)^T is bounded by half an activation step.
    4 bits, 40 rows: past the grouped GEMM's size, the dequantising path (no activation rounding)."""
    w, x, b = _layer(m=m)
    qw = _quantizer(bits, compute=f"int{bits}_dynamic").quantize(w)
    y = qw.linear(x, b)
    flat = x.reshape(-1, 256)
    xs = flat.abs().amax(dim=1, keepdim=True) / 127
    x_dq = torch.round(flat / xs) * xs if (bits, m) != (4, 40) else flat
    spec = (x_dq @ qw.dequantize().t() + b).view_as(y)
    # int32 accumulation is exact; the rescale is two fp32 products: a few ulps of the result
    assert_close(y, spec, atol=1e-5, rtol=8 * EPS32, what="int8 dynamic vs its spec")
    bound = (xs / 2) * qw.dequantize().abs().sum(dim=1)[None]  # sum_k |x_k - x_dq_k| |w_nk|
    ref = tq.quantized_linear_reference(x, qw, b).reshape(-1, 96)
    assert ((y.reshape(-1, 96) - ref).abs() <= bound * (1 + 1e-5) + 1e-5).all()


def test_compute_paths_close_to_full_precision():
    w, x, b = _layer()
    full = x @ w.t() + b
    rel = {}
    for bits, compute in [(8, "int8_dynamic"), (8, "dequantize"), (4, "int4_dynamic"), (4, "dequantize")]:
        y = _quantizer(bits, compute=compute).quantize(w).linear(x, b)
        rel[bits, compute] = float((y - full).norm() / (full - b).norm())
    # 8-bit weights: RMS error step / sqrt(12) = max|w| / 127 / 3.46 ~ 0.9% of a Gaussian row's RMS when
    # max ~ 4 sigma; per-token activations add the same again. 4-bit: the step is 4.8 sigma / 15 -> ~9%.
    assert rel[8, "dequantize"] < 0.02 and rel[8, "int8_dynamic"] < 0.03, rel
    assert rel[4, "dequantize"] < 0.15 and rel[4, "int4_dynamic"] < 0.15, rel


def test_bfloat16_activations():
    w, x, b = _layer()
    for bits, compute in [(8, "int8_dynamic"), (8, "dequantize"), (4, "int4_dynamic"), (4, "dequantize")]:
        qw = _quantizer(bits, compute=compute).quantize(w)
        y = qw.linear(x.bfloat16(), b.bfloat16())
        assert y.dtype == torch.bfloat16
        ref = tq.quantized_linear_reference(x, qw, b)
        assert_close(y.float(), ref, atol=0.06 * float(ref.abs().max()), what=f"bf16 {bits} {compute}")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("bits, dtype", [(8, torch.float16), (8, torch.bfloat16), (4, torch.bfloat16)])
def test_cuda_kernels_equal_x_at_dequantized_weight(bits, dtype):
    w, x, b = _layer(cout=256, m=9)
    qw = tq.Quantizer(bits, 64, torch.device("cuda"), dtype).quantize(w.cuda())
    y = qw.linear(x.cuda().to(dtype), b.cuda().to(dtype)).float().cpu()
    ref = tq.quantized_linear_reference(x, qw, b).cpu()
    assert_close(y, ref, atol=0.02 * float(ref.abs().max()), what=f"cuda {bits}-bit {dtype}")


# ---- the backend, the engine, the CLI ------------------------------------------------------------
def test_layer_selection_and_counts():
    B = get_backend("cpu", quantize=4, group_size=64)
    w, x, b = _layer(16, 80)  # 80 = 64 + a partial group: stays in full precision, as on MLX
    kept = B.prepare_linear(w)
    assert isinstance(kept, torch.Tensor)
    assert_close(B.linear(x, kept, b), x @ w.t() + b, atol=1e-5)
    w2, x2, b2 = _layer(16, 128)
    quantised = B.prepare_linear(w2)
    assert isinstance(quantised, tq.QuantizedWeight) and quantised.nbytes < w2.nbytes * 0.3  # <= 1 B / weight
    assert torch.equal(B.linear(x2, quantised, b2), quantised.linear(x2, b2))
    assert B.prepare_linear(quantised) is quantised  # a weight that arrives quantised stays as it is
    assert (B.quantized_layers, B.full_precision_layers) == (2, 1)
    assert B.quantization == "4bit-g64" and "quantize=4bit-g64" in repr(B)
    assert get_backend("cpu", quantize=8).quantization == "8bit-channel"
    plain = get_backend("cpu")
    assert plain.quantization is None and isinstance(plain.prepare_linear(w2), torch.Tensor)


def test_cpu_path_follows_the_cpu():
    q = tq.Quantizer(8, 64, torch.device("cpu"), torch.float32)
    assert q.compute == ("int8_dynamic" if tq.cpu_has_fast_int8() else "dequantize")
    four = tq.Quantizer(4, 64, torch.device("cpu"), torch.float32).compute
    assert four == ("int4_dynamic" if tq.cpu_has_fast_int8() else "dequantize")


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"quantize": 3}, "quantize=3"),
        ({"quantize": 16}, "quantize=16"),
        ({"quantize": True}, "quantize=True"),
        ({"quantize": 4, "group_size": 48}, "group_size=48"),
        ({"quantize": 8, "group_size": 256}, "group_size=256"),
    ],
)
def test_bad_options_name_the_option(kw, fragment):
    with pytest.raises(InvalidOptionError, match=fragment):
        get_backend("cpu", **kw)


def test_int4_on_cuda_needs_bfloat16():
    with pytest.raises(InvalidOptionError, match="bfloat16"):
        tq.check_quantization(4, 64, "cuda", torch.float16)
    tq.check_quantization(4, 64, "cuda", torch.bfloat16)
    tq.check_quantization(8, 64, "cuda", torch.float16)


def test_cli_bad_quantize_is_one_line(capsys):
    audio = str(FIXTURES / "en_short.wav")
    assert main(["transcribe", audio, "--device", "cpu", "--quantize", "3"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("polyasr: error:") and "quantize=3" in err and "\n" not in err
    assert main(["transcribe", audio, "--device", "cpu", "--quantize", "4", "--group-size", "100"]) != 0
    assert "group_size=100" in capsys.readouterr().err


# ---- real Whisper weights: WER cost on the English fixtures --------------------------------------------
WER_SLACK = {8: 0.02, 4: 0.05}
OPTS = TranscribeOptions(language="en", temperatures=(0.0,), beam_size=1)  # greedy: token-by-token agreement


def _transcribe(engine, name: str):
    return engine.transcribe(load_audio(FIXTURES / f"{name}.wav"), OPTS)


def _check_wer_cost(model_id: str, path, fp32_engine, names: list[str]) -> dict:
    """int8 and int4 (group 64) on load: WER on each fixture within WER_SLACK of fp32's, the layer counts
    reported. Returns the quantised results by bits and fixture."""
    wer = lambda result, name: word_error_rate((FIXTURES / f"{name}.txt").read_text(encoding="utf-8"), result.text)  # noqa: E731
    base = {name: wer(_transcribe(fp32_engine, name), name) for name in names}
    results = {}
    for bits in (8, 4):
        engine = AsrEngine.from_model(model_id, path, device="cpu", quantize=bits)
        results[bits] = {name: _transcribe(engine, name) for name in names}
        wers = {name: wer(results[bits][name], name) for name in names}
        for name in names:
            assert wers[name] <= base[name] + WER_SLACK[bits], f"{model_id} {bits}-bit {name}: {wers} vs fp32 {base}"
        # every Whisper linear's input width (d_model, 4 d_model) is a multiple of 64: none left in full precision
        info = results[bits][names[0]].info
        assert info["quantize"] == tq.label(bits, 64) and info["quantized_layers"] > 0
        assert info["full_precision_layers"] == 0
    return results


@pytest.mark.slow
def test_real_tiny_en_wer_cost_and_ctranslate2_conversion(whisper_tiny_en_dir, whisper_tiny_en_engine, tmp_path):
    """Real tiny.en on en_short and en_medium; then its CTranslate2 directory converted at 4 bits comes back in
    the transformers layout with our names and gives the tokens of quantising on load."""
    on_load = _check_wer_cost("whisper-tiny.en", whisper_tiny_en_dir, whisper_tiny_en_engine, ["en_short", "en_medium"])
    out = _convert("whisper-tiny.en", whisper_tiny_en_dir, tmp_path / "q", 4, 64)
    assert (out / "config.json").is_file() and not (out / "model.bin").exists()
    assert (out / "model.safetensors").stat().st_size < (whisper_tiny_en_dir / "model.bin").stat().st_size
    a = on_load[4]["en_short"]
    b = _transcribe(AsrEngine.from_model("whisper-tiny.en", out, device="cpu"), "en_short")
    assert [s.tokens for s in a.segments] == [s.tokens for s in b.segments]
    assert b.info["quantize"] == "4bit-g64"


@pytest.mark.slow
def test_real_base_wer_cost(whisper_base_dir, whisper_base_engine):
    _check_wer_cost("whisper-base", whisper_base_dir, whisper_base_engine, ["en_short"])


# ---- the four families at random weights: tokens mostly equal to fp32 ---------------------------------
# Random weights give nearly flat logits, so a quantisation error can flip an argmax that a trained model
# would not; in the autoregressive decoders (Qwen3-ASR, Whisper) one flipped token then changes every
# later one, so their agreement at random weights says little (the real-weight WER tests above are their
# proof). The floors sit under the rates the test prints (group 32, en_short's first 3 s).
AGREEMENT_FLOOR = {
    ("gigaam-v3-ctc", 8): 0.8,
    ("gigaam-v3-ctc", 4): 0.6,
    ("parakeet-tdt-v3", 8): 0.8,
    ("parakeet-tdt-v3", 4): 0.6,
    ("qwen3-asr-0.6b", 8): 0.25,
    ("qwen3-asr-0.6b", 4): 0.1,
    ("whisper", 8): 0.8,
    ("whisper", 4): 0.03,
}
MODELS = ["gigaam-v3-ctc", "parakeet-tdt-v3", "qwen3-asr-0.6b", "whisper"]


@pytest.fixture(scope="module")
def random_checkpoints(tmp_path_factory, whisper_base_dir):
    pytest.importorskip("omegaconf")
    pytest.importorskip("transformers.models.qwen3_asr")
    from conftest import make_hf_whisper
    from parakeet_refs import feature_extractor, random_model, tiny_config, train_sentencepiece, write_hf_dir
    from qwen3_asr_refs import build_reference, make_tokenizer, save_checkpoint, small_config
    from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

    torch.manual_seed(0)
    gcfg = tiny_cfg(d_model=32)
    gigaam = save_ckpt(tmp_path_factory.mktemp("gigaam") / "v3_ctc.ckpt", gcfg, v3_state_dict(gcfg, bf16_window=True))
    pcfg = tiny_config(48)
    parakeet = write_hf_dir(
        random_model(pcfg, seed=3), feature_extractor(pcfg), train_sentencepiece(48), tmp_path_factory.mktemp("pk")
    )
    tok = make_tokenizer()
    qcfg = small_config(tok)
    qwen = save_checkpoint(build_reference(qcfg, seed=5), qcfg, tok, tmp_path_factory.mktemp("qwen") / "q", "qwen")
    # a random decoder runs to Whisper's sample limit (n_text_ctx / 2 tokens): a short context bounds its time
    whisper = tmp_path_factory.mktemp("whisper")
    make_hf_whisper(whisper, whisper_base_dir, max_target_positions=32)
    return {"gigaam-v3-ctc": gigaam, "parakeet-tdt-v3": parakeet, "qwen3-asr-0.6b": qwen, "whisper": whisper}


class _Runs:
    """Each model's engines and transcripts of en_short's first 3 s, made once for the module: fp32 (bits
    None), quantised on load (group 32), and loaded from `polyasr convert --quantize` output."""

    def __init__(self, sources: dict, out_dir: Path):
        self.sources, self.out_dir = sources, out_dir
        self.audio = load_audio(FIXTURES / "en_short.wav")[: 16000 * 3]
        self._done: dict = {}

    def converted(self, model_id: str, bits: int) -> Path:
        key = ("converted", model_id, bits)
        if key not in self._done:
            self._done[key] = _convert(model_id, self.sources[model_id], self.out_dir / f"{model_id}-{bits}", bits)
        return self._done[key]

    def run(self, model_id: str, bits: int | None = None, converted: bool = False):
        """-> (engine, result)."""
        key = (model_id, bits, converted)
        if key not in self._done:
            if converted:
                engine = AsrEngine.from_model(model_id, self.converted(model_id, bits), device="cpu")
            else:
                engine = AsrEngine.from_model(
                    model_id, self.sources[model_id], device="cpu", quantize=bits, group_size=32
                )
            opts = OPTS if model_id == "whisper" else None
            self._done[key] = engine, engine.transcribe(self.audio, opts)
        return self._done[key]


@pytest.fixture(scope="module")
def runs(random_checkpoints, tmp_path_factory):
    return _Runs(random_checkpoints, tmp_path_factory.mktemp("converted"))


def _tokens(result) -> list[int]:
    return [t for s in result.segments for t in s.tokens]


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("model_id", MODELS)
def test_random_weight_models_agree_with_fp32(runs, model_id, bits):
    ref = _tokens(runs.run(model_id)[1])
    engine, result = runs.run(model_id, bits)
    assert ref, "the random model emits nothing: agreement would prove little"
    assert engine.backend.quantized_layers > 0
    rate = difflib.SequenceMatcher(a=ref, b=_tokens(result), autojunk=False).ratio()
    assert rate >= AGREEMENT_FLOOR[model_id, bits], (
        f"{model_id} {bits}-bit: token agreement {rate:.3f} ({len(ref)} tokens)"
    )
    print(f"{model_id} {bits}-bit: token agreement {rate:.3f} over {len(ref)} tokens")  # noqa: T201


def test_int8_weights_shrink(runs):
    engine = runs.run("whisper", 8)[0]
    qws = [v for v in engine.model.params.values() if isinstance(v, tq.QuantizedWeight)]
    assert qws and all(v.nbytes < v.in_features * v.out_features * 4 / 3.5 for v in qws)
    assert engine.backend.quantized_layers == len(qws)


# ---- quantised checkpoints (`polyasr convert --quantize`) -----------------------------------------------
@pytest.mark.parametrize("bits, group_size", [(8, 64), (4, 32), (4, 128)])
def test_host_scheme_equals_torch_scheme(bits, group_size):
    from polyasr.backends.quant_layout import quantize_host

    w, _, _ = _layer()
    qa = quantize_host(w.numpy(), bits, group_size, "w")
    stored = _quantizer(bits, group_size).from_stored(qa)
    on_load = _quantizer(bits, group_size).quantize(w)
    for part in ("qweight", "packed", "scales", "biases"):
        a, b = getattr(stored, part), getattr(on_load, part)
        assert (a is None and b is None) or torch.equal(a, b), part
    assert torch.equal(stored.dequantize(), on_load.dequantize())
    # the layout's formula q_u * s + bias (bias = -128 s at 8 bits) rounds differently from q * s: ulps of 128 s
    assert_close(np.asarray(qa), on_load.dequantize(), atol=256 * EPS32 * float(on_load.scales.max()))


def _convert(model_id, src, out, bits, group_size=32):
    assert main(["convert", "--model", model_id, "--model-path", str(src), "-o", str(out), "--quantize", str(bits),
                 "--group-size", str(group_size)]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("model_id", MODELS)
def test_converted_checkpoint_equals_quantising_on_load(runs, model_id, bits):
    from polyasr.models.quantized_checkpoint import read_metadata

    out = runs.converted(model_id, bits)
    meta = read_metadata(out)
    assert meta["bits"] == bits and meta["quantized"] and not list(out.glob("*.ckpt")) + list(out.glob("*.nemo"))
    a, b = runs.run(model_id, bits)[1], runs.run(model_id, bits, converted=True)[1]
    assert [s.tokens for s in a.segments] == [s.tokens for s in b.segments] and a.text == b.text
    for key in ("quantize", "quantized_layers", "full_precision_layers"):
        assert b.info[key] == a.info[key], key


@pytest.mark.mlx
@pytest.mark.parametrize("bits", [8, 4])
def test_converted_checkpoint_on_mlx(runs, bits):
    """MLX multiplies by exactly the stored weights (repacked, not requantised) and quantises the tied
    output projection with the same scheme, so it gives torch's tokens (weight-only on both)."""
    mx = pytest.importorskip("mlx.core")
    from polyasr.backends.mlx_quant import QuantizedWeight as MLXQuantizedWeight

    out = runs.converted("whisper", bits)
    ours = AsrEngine.from_model("whisper", out, device="cpu")
    for v in ours.model.params.values():
        if isinstance(v, tq.QuantizedWeight):
            v.compute = "dequantize"  # weight-only, as on MLX
    mlx = AsrEngine.from_model("whisper", out, device="mlx")
    name = "decoder.blocks.0.mlp1.weight"
    w_mlx = mlx.model.params[name]
    assert isinstance(w_mlx, MLXQuantizedWeight)
    dq = mx.dequantize(w_mlx.weight, w_mlx.scales, w_mlx.biases, group_size=32, bits=bits)
    assert_close(np.array(dq), ours.model.params[name].dequantize(), atol=1e-6, what="MLX's copy of the weight")
    a, b = ours.transcribe(runs.audio, OPTS), mlx.transcribe(runs.audio, OPTS)
    assert [s.tokens for s in a.segments] == [s.tokens for s in b.segments]
    for key in ("quantize", "quantized_layers", "full_precision_layers"):
        assert b.info[key] == a.info[key], key


def _write_copy(src: Path, dst: Path, edit) -> Path:
    import json
    import shutil

    from polyasr.models.checkpoint_io import read_safetensors, write_safetensors
    from polyasr.models.quantized_checkpoint import META_KEY, read_metadata

    shutil.copytree(src, dst)
    arrays, tags = read_safetensors(src / "model.safetensors")
    arrays = {k: np.array(v) for k, v in arrays.items()}
    edit(arrays)
    write_safetensors(arrays, tags, dst / "model.safetensors", {META_KEY: json.dumps(read_metadata(src))})
    return dst


def test_bad_quantized_checkpoints_name_the_tensor(runs, tmp_path):
    from polyasr.errors import CheckpointError

    good = runs.converted("whisper", 8)
    name = "decoder.blocks.0.mlp1.weight"

    def short_scales(a):
        a[f"{name}.scales"] = a[f"{name}.scales"][:, :1].copy()

    def uneven_scales(a):
        a[f"{name}.scales"][:, 0] *= 2

    def lost_biases(a):
        del a[f"{name}.biases"]

    for i, (edit, message) in enumerate(
        [
            (short_scales, rf"{name}.*scales has shape"),
            (uneven_scales, rf"{name}.*one per output channel"),
            (lost_biases, rf"{name}.*lacks {name}.biases"),
        ]
    ):
        with pytest.raises(CheckpointError, match=message):
            AsrEngine.from_model("whisper", _write_copy(good, tmp_path / f"bad{i}", edit), device="cpu")
    with pytest.raises(InvalidOptionError, match="holds 8-bit weights"):
        AsrEngine.from_model("whisper", good, device="cpu", quantize=4, group_size=32)
