"""Parakeet TDT 0.6B on CPU at the real v3 dimensions (24 x 1024, 8 heads, 128 mels, random weights).

Encoder: polyasr vs transformers' ParakeetForTDT (`get_audio_features`: encoder + the joint's
encoder projection) on the same features, fp32, same threads, alternating round by round.
Reports RTF, the peak RSS growth during one call (sampled by a thread, so it is this call's
memory, not the process's history), and the share of this machine's fp32 matmul rate (measured
in the same run) each side reaches.
TDT decode: polyasr's C++ loop vs transformers' `generate` loop on the same encoder output
(transformers is handed the encoder output, so only its decoding loop is timed).

    .venv/bin/python -m pytest bench/bench_parakeet.py --benchmark-only            # 10 s x 1, 10 s x 8, 60 s x 1
    POLYASR_BENCH_FULL=1 .venv/bin/python -m pytest bench/bench_parakeet.py --benchmark-only   # + 60 s x 8
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest
import torch
from conftest import ENCODER_SHAPES, count_flops, encoder_rounds, gemm_share, note, record, side_by_side

transformers = pytest.importorskip("transformers")

from polyasr.backends.torch import TorchBackend  # noqa: E402
from polyasr.models.parakeet import model as net  # noqa: E402
from polyasr.models.parakeet.config import ParakeetConfig  # noqa: E402
from polyasr.models.parakeet.decode import Transducer  # noqa: E402
from polyasr.models.parakeet.weights import HF_MAP, map_weights  # noqa: E402

GROUP_DECODE = "Parakeet TDT v3 greedy decode, 10 s x 4 (125 frames each), encoder output given"
V3_ENCODER = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=8,
    intermediate_size=4096,
    conv_kernel_size=9,
    subsampling_factor=8,
    subsampling_conv_channels=256,
    num_mel_bins=128,
    scale_input=False,
    attention_bias=True,
    convolution_bias=True,
    dropout=0.0,
    layerdrop=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
)


@pytest.fixture(scope="module")
def models():
    config = transformers.ParakeetTDTConfig(
        vocab_size=8193,
        decoder_hidden_size=640,
        num_decoder_layers=2,
        durations=[0, 1, 2, 3, 4],
        encoder_config=V3_ENCODER,
        pad_token_id=2,
        blank_token_id=8192,
    )
    torch.manual_seed(0)
    ref = transformers.ParakeetForTDT(config).eval()
    with torch.no_grad():  # a joint that is not constant: some tokens, mostly blanks, as real output
        ref.joint.head.weight.normal_(0, 640**-0.5)
        ref.joint.head.bias[8192] += 0.5
    ref.generation_config.decoder_start_token_id = 8192
    ref.generation_config.pad_token_id = 2
    ref.generation_config.suppress_tokens = list(range(8193, 8198))
    cfg = ParakeetConfig.from_hf(config.to_dict(), {"feature_size": 128})
    sd = {k: v.numpy() for k, v in ref.state_dict().items() if not k.endswith("inv_freq")}
    params, tags = map_weights(sd, {k: "float32" for k in sd}, cfg, HF_MAP, "bench")
    B = TorchBackend("cpu", "float32")
    encoder = {k: B.param(v, tags.get(k)) for k, v in params.items() if k.startswith(("encoder.", "joint.enc"))}
    return ref, net.prepare(encoder, cfg, B), Transducer(params, tags, cfg, B), cfg, B


def _features(seconds: float, batch: int):
    frames = int(seconds * 100)
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 128, frames, generator=g), torch.full((batch,), frames)


class PeakRss:
    """Peak resident memory above the starting point while the block runs (sampled every 2 ms)."""

    def __enter__(self):
        self.proc, self.start, self.peak, self._stop = psutil.Process(), 0, 0, threading.Event()
        self.start = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.growth_mb = (max(self.peak, self.proc.memory_info().rss) - self.start) / 2**20


@pytest.mark.parametrize("seconds, batch", ENCODER_SHAPES)
def test_encoder(benchmark, models, gemm_rate, seconds, batch):
    ref, params, _, cfg, B = models
    feats, lengths = _features(seconds, batch)
    mask = torch.arange(feats.shape[-1])[None] < lengths[:, None]

    def ours():
        encoded, _ = net.encode(params, cfg, B, feats, lengths.numpy())
        return net.joint_encoder(params, B, encoded)

    def theirs():
        return ref.get_audio_features(input_features=feats.transpose(1, 2), attention_mask=mask).pooler_output

    with PeakRss() as rss:
        flops, out = count_flops(ours)
    rounds, warmup = encoder_rounds(seconds, batch)
    group = f"Parakeet TDT v3 encoder, {seconds:.0f} s x {batch}, {torch.get_num_threads()} threads"
    t_ours, t_ref = side_by_side(benchmark, group, "transformers", ours, theirs, rounds, warmup)
    rtf = t_ours / (seconds * batch)
    benchmark.extra_info.update(rtf=rtf, peak_rss_growth_mb=rss.growth_mb, gflop=flops / 1e9)
    note(group, f"RTF polyasr {rtf:.4f}, transformers {t_ref / (seconds * batch):.4f}; {flops / 1e9:.0f} GFLOP")
    gemm_share(group, "polyasr", flops, t_ours, gemm_rate)
    gemm_share(group, "transformers", flops, t_ref, gemm_rate)
    note(group, f"polyasr: peak RSS growth during one call {rss.growth_mb:.0f} MB")
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("impl", ["transformers", "polyasr-c++", "polyasr-device-loop"])
def test_tdt_decode(benchmark, models, impl):
    """10 s x 4 utterances: the decoding loop alone, on one encoder output."""
    ref, params, transducer, cfg, B = models
    feats, lengths = _features(10.0, 4)
    mask = torch.arange(feats.shape[-1])[None] < lengths[:, None]
    with torch.inference_mode():
        enc = ref.get_audio_features(input_features=feats.transpose(1, 2), attention_mask=mask)
    proj, n = enc.pooler_output, enc.attention_mask.sum(-1).numpy()

    def run():
        with torch.inference_mode():
            if impl == "transformers":
                return ref.generate(input_features=feats.transpose(1, 2), attention_mask=mask)
            if impl == "polyasr-c++":
                return transducer.greedy_host(proj.numpy(), n)
            return transducer.greedy_device(proj, n)

    if impl == "transformers":
        # generate() runs the encoder itself; hand it the same encoder output so only its loop is timed
        ref.get_audio_features = lambda **kwargs: enc
    try:
        benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    finally:
        ref.__dict__.pop("get_audio_features", None)
    if impl != "transformers":
        hyps = run()
        note(GROUP_DECODE, f"{impl}: {sum(len(h.tokens) for h in hyps)} tokens from {int(n.sum())} frames")
    record(GROUP_DECODE, "transformers", impl, benchmark)
    assert np.isfinite(benchmark.stats.stats.min)
