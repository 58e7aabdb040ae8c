"""Qwen3-ASR-0.6B on CPU at the real dimensions (AuT 18 x 896 + Qwen3 28 x 1024, vocabulary 151936,
random weights, fp32): polyasr vs transformers' `Qwen3ASRForConditionalGeneration` on the same
weights and features, same threads, in the same run.

Measured: encoder RTF (10 s x 1, 10 s x 8, 60 s x 1; + 60 s x 8 with POLYASR_BENCH_FULL=1) and the
share of this machine's fp32 matmul rate it reaches (measured in the same run), time to first token
(features -> encoder -> prompt prefill -> first greedy token, 10 s of audio), decoder time per
token ((generate 33 - generate 1) / 32 tokens, batch 1), and the share of a polyasr decode step spent
outside matrix products (profiled).
The two implementations alternate round by round (transformers in pytest-benchmark's setup hook)
and each reports its minimum, so a shared, loaded CPU skews neither side.
~3 GB of weights per implementation:

    .venv/bin/python -m pytest bench/bench_qwen3_asr.py --benchmark-only
    POLYASR_BENCH_FULL=1 .venv/bin/python -m pytest bench/bench_qwen3_asr.py --benchmark-only  # + 60 s x 8
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ENCODER_SHAPES, RESULTS, count_flops, encoder_rounds, gemm_share, note, quick_or_full, side_by_side

from polyasr.backends.torch import TorchBackend
from polyasr.models.qwen3_asr import model as net
from polyasr.models.qwen3_asr.config import Qwen3ASRConfig
from polyasr.models.qwen3_asr.decode import DecodeStats, greedy
from polyasr.models.qwen3_asr.features import log_mel, mel_config
from polyasr.models.qwen3_asr.model import param_shapes
from polyasr.models.qwen3_asr.prompt import DEFAULT_PROMPT
from polyasr.models.qwen3_asr.weights import transformers_map
from polyasr.models.weight_map import apply_weight_map

pytest.importorskip("transformers.models.qwen3_asr")

AUDIO_TOKEN = 151676
# The released 0.6B config (thinker_config), transformers' field names.
CONFIG = dict(
    audio_config=dict(
        num_mel_bins=128,
        encoder_layers=18,
        encoder_attention_heads=14,
        encoder_ffn_dim=3584,
        d_model=896,
        n_window=50,
        output_dim=1024,
        n_window_infer=800,
        downsample_hidden_size=480,
    ),
    text_config=dict(
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=65536,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    ),
    audio_token_id=AUDIO_TOKEN,
    pad_token_id=151643,
    eos_token_id=[151645, 151643],
    tie_word_embeddings=True,
)
THREADS = torch.get_num_threads()
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu")
BASE = "transformers"


@pytest.fixture(scope="module")
def models():
    from transformers import Qwen3ASRConfig as HFConfig
    from transformers import Qwen3ASRForConditionalGeneration

    torch.manual_seed(0)
    ref = Qwen3ASRForConditionalGeneration(HFConfig(**CONFIG)).eval()
    ref.config._attn_implementation = "sdpa"
    cfg = Qwen3ASRConfig.from_dict(CONFIG)
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items() if k != "lm_head.weight"}
    params, tags = apply_weight_map(
        state, {k: "float32" for k in state}, transformers_map(True), param_shapes(cfg), "bench"
    )
    B = TorchBackend("cpu", "float32")
    ours = net.prepare({k: B.param(v, tags.get(k)) for k, v in params.items()}, cfg, B)
    return ref, ours, cfg, B


def _audio(seconds: float) -> np.ndarray:
    return (0.1 * np.random.RandomState(0).randn(int(seconds * 16000))).astype(np.float32)


def _prompt(tokens: int) -> list[int]:
    """Qwen's prompt shape: 9 tokens, the audio placeholders, 6 tokens (ids as the released tokenizer's)."""
    head, tail = [151644, 8948, 198, 151645, 198, 151644, 872, 198, 151669], [151670, 151645, 198, 151644, 77091, 198]
    assert DEFAULT_PROMPT.count("<|audio_pad|>") == 1
    return head + [AUDIO_TOKEN] * tokens + tail


def _side_by_side(benchmark, group: str, ours, theirs, rounds: int) -> None:
    side_by_side(benchmark, group, BASE, ours, theirs, rounds, warmup=1)


@pytest.mark.parametrize("seconds, batch", ENCODER_SHAPES)
def test_encoder(benchmark, models, gemm_rate, seconds, batch):
    ref, params, cfg, B = models
    feats, frames = log_mel([_audio(seconds)] * batch, mel_config(), B)
    t = -(-feats.shape[-1] // 100) * 100
    padded = torch.nn.functional.pad(feats, (0, t - feats.shape[-1]))
    mask = (torch.arange(t)[None] < torch.as_tensor(frames)[:, None]).long()
    group = f"Qwen3-ASR-0.6B encoder, {seconds:.0f} s x {batch}, CPU fp32, {THREADS} threads"
    flops, _ = count_flops(lambda: net.encode(params, cfg, B, feats, frames))
    rounds, warmup = encoder_rounds(seconds, batch)
    t_ours, t_ref = side_by_side(
        benchmark,
        group,
        BASE,
        lambda: net.encode(params, cfg, B, feats, frames),
        lambda: ref.model.get_audio_features(padded, mask).pooler_output,
        rounds,
        warmup,
    )
    note(group, f"RTF polyasr {t_ours / (seconds * batch):.4f}, {BASE} {t_ref / (seconds * batch):.4f}")
    gemm_share(group, "polyasr", flops, t_ours, gemm_rate)
    gemm_share(group, BASE, flops, t_ref, gemm_rate)


def _polyasr_generate(params, cfg, B, audio, n_new):
    feats, frames = log_mel([audio], mel_config(), B)
    emb, tokens = net.encode(params, cfg, B, feats, frames)
    ids = torch.tensor([_prompt(tokens[0])])
    x = B.masked_scatter(net.embed(params, B, ids), ids == AUDIO_TOKEN, emb)
    out = greedy(params, cfg, B, x, np.zeros(1, np.int64), [n_new], frozenset(), guard=False, stats=DecodeStats())
    assert len(out[0].tokens) == n_new


def _transformers_generate(ref, audio, n_new):
    feats, frames = log_mel([audio], mel_config(), TorchBackend("cpu", "float32"))
    t = -(-feats.shape[-1] // 100) * 100
    tokens = net.audio_tokens(int(frames[0]), Qwen3ASRConfig.from_dict(CONFIG))
    ids = torch.tensor([_prompt(tokens)])
    out = ref.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        input_features=torch.nn.functional.pad(feats, (0, t - feats.shape[-1])),
        input_features_mask=(torch.arange(t)[None] < int(frames[0])).long(),
        max_new_tokens=n_new,
        min_new_tokens=n_new,
        do_sample=False,
        eos_token_id=None,
    )
    assert out.shape[1] == ids.shape[1] + n_new


def _generate_group(n_new: int) -> str:
    return f"Qwen3-ASR-0.6B, 10 s audio, batch 1, generate {n_new} token(s), CPU fp32, {THREADS} threads"


@pytest.mark.parametrize("n_new", [1, 33])
def test_generate(benchmark, models, n_new):
    """n_new = 1: time to first token (features, encoder, prefill, first token); 33: plus 32 decode steps."""
    ref, params, cfg, B = models
    audio = _audio(10.0)
    _side_by_side(
        benchmark,
        _generate_group(n_new),
        lambda: _polyasr_generate(params, cfg, B, audio, n_new),
        lambda: _transformers_generate(ref, audio, n_new),
        rounds=quick_or_full(3, 5) if n_new == 1 else quick_or_full(2, 3),
    )
    first, last = RESULTS.get(_generate_group(1)), RESULTS.get(_generate_group(33))
    if first and last:
        group = "Qwen3-ASR-0.6B decoder, seconds per generated token = (generate 33 - generate 1) / 32"
        for impl in (BASE, "polyasr"):
            RESULTS.setdefault(group, (BASE, {}))[1][impl] = (last[1][impl] - first[1][impl]) / 32


def test_decode_step_overhead(benchmark, models):
    """Share of one decode step (batch 1, ~150 cached positions) outside matrix products: the profiled
    self time of mm/addmm/bmm/SDPA kernels against the step's unprofiled wall time."""
    from torch.profiler import ProfilerActivity, profile

    _, params, cfg, B = models
    with torch.inference_mode():
        cache = net.new_cache(cfg, B, np.zeros(1, np.int64), 200)
        net.decode(params, cfg, B, torch.zeros(1, 150, cfg.text.hidden_size), cache)
        x = net.embed(params, B, torch.tensor([[1000]]))

        def step():
            cache.length = 150
            return net.logits(params, B, net.decode(params, cfg, B, x, cache)).argmax(-1)

        benchmark.pedantic(step, rounds=quick_or_full(5, 10), iterations=1, warmup_rounds=2)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                step()
    matmul = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS)
    group = "Qwen3-ASR-0.6B decode step (batch 1), ratio = share of the step"
    RESULTS.setdefault(group, ("step (wall)", {}))[1]["step (wall)"] = benchmark.stats.stats.min
    RESULTS[group][1]["matrix products (profiled self time)"] = matmul / 5 / 1e6
    benchmark.extra_info["non_matmul_share"] = 1 - matmul / 5 / 1e6 / benchmark.stats.stats.min
