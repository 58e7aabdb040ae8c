"""GigaAM v3 encoder forward on CPU at the real dimensions (16 x 768, 16 heads, 220M params, random
weights): polyasr vs the reference Conformer (the `gigaam` package's modules with the v3 pieces
from tests/models/gigaam_refs.py) on the same features, fp32, same threads; the two alternate
round by round. Reports RTF, the process's peak RSS, and the share of this machine's fp32 matmul
rate (measured in the same run) each side reaches.

    .venv/bin/python -m pytest bench/bench_gigaam.py --benchmark-only            # 10 s x 1, 10 s x 8, 60 s x 1
    POLYASR_BENCH_FULL=1 .venv/bin/python -m pytest bench/bench_gigaam.py --benchmark-only   # + 60 s x 8, more rounds
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ENCODER_SHAPES, count_flops, encoder_rounds, gemm_share, note, side_by_side

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "models"))
gigaam_refs = pytest.importorskip("gigaam_refs", reason="needs the gigaam reference package (see .ci/setup)")

from polyasr.backends.torch import TorchBackend  # noqa: E402
from polyasr.benchmark import peak_rss_mb  # noqa: E402
from polyasr.models.gigaam import model as net  # noqa: E402
from polyasr.models.gigaam.config import GigaAMConfig  # noqa: E402
from polyasr.models.gigaam.weights import map_weights  # noqa: E402


@pytest.fixture(scope="module")
def models():
    cfg = gigaam_refs.v3_config(n_layers=16, d_model=768, n_heads=16)
    ref = gigaam_refs.build_reference(cfg)
    gc = GigaAMConfig.from_dict(cfg)
    sd = ref.state_dict()
    params, tags, _ = map_weights({k: v.numpy() for k, v in sd.items()}, {k: "float32" for k in sd}, gc, "bench")
    B = TorchBackend("cpu", "float32")
    return ref, net.prepare({k: B.param(v, tags.get(k)) for k, v in params.items()}, gc, B), gc, B


def _features(seconds: float, batch: int, gc):
    frames = int(seconds * 100)
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, gc.feat_in, frames, generator=g), torch.full((batch,), frames)


@pytest.mark.parametrize("seconds, batch", ENCODER_SHAPES)
def test_encoder(benchmark, models, gemm_rate, seconds, batch):
    ref, params, gc, B = models
    feats, lengths = _features(seconds, batch, gc)

    def ours():
        return net.encode(params, gc, B, feats, lengths.numpy())[0]

    def theirs():
        return ref.encoder(feats, lengths)[0]

    flops, out = count_flops(ours)
    rounds, warmup = encoder_rounds(seconds, batch)
    group = f"GigaAM v3 encoder, {seconds:.0f} s x {batch}, {torch.get_num_threads()} threads"
    t_ours, t_ref = side_by_side(benchmark, group, "reference", ours, theirs, rounds, warmup)
    audio_secs = seconds * batch
    benchmark.extra_info.update(rtf=t_ours / audio_secs, peak_rss_mb=peak_rss_mb(), gflop=flops / 1e9)
    note(group, f"RTF polyasr {t_ours / audio_secs:.4f}, reference {t_ref / audio_secs:.4f}; {flops / 1e9:.0f} GFLOP")
    gemm_share(group, "polyasr", flops, t_ours, gemm_rate)
    gemm_share(group, "reference", flops, t_ref, gemm_rate)
    note(group, f"peak RSS of the process so far {peak_rss_mb():.0f} MB")
    np.testing.assert_equal(np.isfinite(out.float().numpy()).all(), True)
