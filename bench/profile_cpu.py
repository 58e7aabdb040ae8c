"""Where the torch CPU backend's time goes: torch.profiler over the encoders (GigaAM v3, Parakeet TDT v3,
Qwen3-ASR-0.6B, Whisper base) and Whisper base's per-token decoder step, at the real dimensions with
random weights, fp32.

    .venv/bin/python bench/profile_cpu.py                      # 10 s x 1, 10 s x 8, 60 s x 1, every model
    .venv/bin/python bench/profile_cpu.py gigaam --shapes 10x1 --top 15

Per case: wall time of one unprofiled call, the share of the profiled self time in matrix products
(mm / addmm / bmm / SDPA) and convolutions, and the top ops outside them. A script, not a test: it
prints a breakdown and asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from polyasr.backends.torch import TorchBackend

GEMM_OPS = {
    "mkldnn::_linear_pointwise",
    "mkl::_mkl_linear",
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
}
CONV_OPS = {"aten::mkldnn_convolution", "aten::_convolution_depthwise2d", "aten::thnn_conv2d", "aten::_slow_conv2d"}


def _random(shapes, skip=()):
    g = np.random.default_rng(0)
    return {
        k: (g.standard_normal(s, dtype=np.float32) * (s[-1] ** -0.5 if len(s) > 1 else 0.1) + (len(s) == 1))
        for k, s in shapes.items()
        if not any(x in k for x in skip)
    }


def gigaam():
    from polyasr.models.gigaam import model as net
    from polyasr.models.gigaam.config import GigaAMConfig

    cfg = GigaAMConfig.tiny(n_layers=16, d_model=768, n_heads=16)
    B = TorchBackend("cpu", "float32")
    params = net.prepare({k: B.param(v) for k, v in _random(net.param_shapes(cfg)).items()}, cfg, B)

    def run(seconds, batch):
        x = torch.randn(batch, cfg.feat_in, int(seconds * 100))
        return lambda: net.encode(params, cfg, B, x)

    return run


def parakeet():
    from polyasr.models.parakeet import model as net
    from polyasr.models.parakeet.config import ParakeetConfig

    cfg = ParakeetConfig()
    B = TorchBackend("cpu", "float32")
    raw = _random(net.param_shapes(cfg), skip=("running_", "decoder.", "joint.pred", "joint_net"))
    for i in range(cfg.n_layers):
        a = f"encoder.layers.{i}.self_attn"
        for part in ("weight", "bias"):
            raw[f"{a}.linear_qkv.{part}"] = np.concatenate([raw.pop(f"{a}.linear_{n}.{part}") for n in "qkv"])
    params = net.prepare({k: B.param(v) for k, v in raw.items()}, cfg, B)

    def run(seconds, batch):
        x = torch.randn(batch, cfg.feat_in, int(seconds * 100))
        return lambda: net.joint_encoder(params, B, net.encode(params, cfg, B, x)[0])

    return run


def qwen3_asr():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_qwen3_asr import CONFIG

    from polyasr.models.qwen3_asr import model as net
    from polyasr.models.qwen3_asr.config import Qwen3ASRConfig

    cfg = Qwen3ASRConfig.from_dict(CONFIG)
    B = TorchBackend("cpu", "float32")
    shapes = {k: s for k, s in net.param_shapes(cfg).items() if k.startswith("audio_tower.")}
    params = {k: B.param(v) for k, v in _random(shapes).items()}
    params = {**net.layers.prepare(params, net.param_shapes(cfg), B)}
    params["audio_tower.positions"] = B.asarray(
        net.sinusoids(net.chunk_tokens(cfg.audio.chunk_frames), cfg.audio.d_model)
    )

    def run(seconds, batch):
        n = int(seconds * 100)
        x = torch.randn(batch, 128, n)
        return lambda: net.encode(params, cfg, B, x, [n] * batch)

    return run


def _whisper():
    from polyasr.models.whisper import model as net
    from polyasr.models.whisper.config import WhisperConfig

    cfg = WhisperConfig.tiny(
        d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8, decoder_attention_heads=8
    )
    cfg = WhisperConfig.tiny(**{**cfg.__dict__, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048})
    B = TorchBackend("cpu", "float32")
    params = net.prepare({k: B.param(v) for k, v in _random(net.param_shapes(cfg)).items()}, cfg, B)
    return net, cfg, B, params


def whisper_base():
    """The encoder always sees a 30 s window; `seconds` only sets how many windows (batch)."""
    net, cfg, B, params = _whisper()

    def run(seconds, batch):
        x = torch.randn(batch, cfg.num_mel_bins, cfg.n_audio_frames)
        return lambda: net.encode(params, cfg, B, x)

    return run


def whisper_step():
    """One decoder step (token + logits + argmax) with `seconds` x 10 positions already cached."""
    net, cfg, B, params = _whisper()

    def run(seconds, batch):
        with torch.inference_mode():
            audio = torch.randn(batch, cfg.max_source_positions, cfg.d_model)
            cache = net.new_cache(params, cfg, B, audio, 224)
            filled = int(seconds * 10)
            net.decode(params, cfg, B, torch.zeros(batch, filled, dtype=torch.long), cache)
        tok = torch.zeros(batch, 1, dtype=torch.long)

        def step():
            cache.length = filled
            return net.logits(params, B, net.decode(params, cfg, B, tok, cache)[:, -1]).argmax(-1)

        return step

    return run


MODELS = {
    "gigaam": gigaam,
    "parakeet": parakeet,
    "qwen3-asr": qwen3_asr,
    "whisper-encoder": whisper_base,
    "whisper-step": whisper_step,
}


def breakdown(fn, repeats: int, top: int) -> str:
    with torch.inference_mode():
        fn()
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS)
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS)
    rest = sorted((e for e in events if e.key not in GEMM_OPS | CONV_OPS), key=lambda e: -e.self_cpu_time_total)
    lines = [
        f"  wall {wall * 1e3:.1f} ms; profiled self time: GEMM+SDPA {gemm / total:.1%}, conv {conv / total:.1%}, "
        f"other {(total - gemm - conv) / total:.1%}"
    ]
    lines += [
        f"    {e.key:<44} {e.self_cpu_time_total / total:6.1%}  {e.count // repeats:5d} calls" for e in rest[:top]
    ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help=f"any of {', '.join(MODELS)} (default: all)")
    ap.add_argument("--shapes", default="10x1,10x8,60x1", help="seconds x batch, comma-separated")
    ap.add_argument("--top", type=int, default=8, help="ops outside GEMMs / convs to list")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models or MODELS:
        build = MODELS[name]()
        for shape in args.shapes.split(","):
            seconds, batch = shape.split("x")
            print(f"{name} {seconds} s x {batch}")
            print(breakdown(build(float(seconds), int(batch)), args.repeats, args.top), flush=True)


if __name__ == "__main__":
    main()
