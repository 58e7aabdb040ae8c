"""GigaAM v3 encoder forward on CPU at the real dimensions (16 x 768, 16 heads, 220M params, random
weights): polyasr vs the reference Conformer (the `gigaam` package's modules with the v3 pieces
from tests/models/gigaam_refs.py) on the same features, fp32, same threads. Reports RTF and the
process's peak RSS. Heavy: 60 s x batch 8 is ~5 TFLOP; run it on purpose:
`pytest bench/bench_gigaam.py --benchmark-only`.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import record

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "models"))
gigaam_refs = pytest.importorskip("gigaam_refs", reason="needs the gigaam reference package (see .ci/setup)")

from polyasr.backends.torch import TorchBackend  # noqa: E402
from polyasr.models.gigaam import model as net  # noqa: E402
from polyasr.models.gigaam.config import GigaAMConfig  # noqa: E402
from polyasr.models.gigaam.weights import map_weights  # noqa: E402

CASES = [(10.0, 1), (10.0, 8), (60.0, 1), (60.0, 8)]


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


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("seconds, batch", CASES)
@pytest.mark.parametrize("impl", ["reference", "polyasr"])
def test_encoder(benchmark, models, impl, seconds, batch):
    ref, params, gc, B = models
    feats, lengths = _features(seconds, batch, gc)

    def run():
        with torch.inference_mode():
            if impl == "reference":
                return ref.encoder(feats, lengths)[0]
            return net.encode(params, gc, B, feats, lengths.numpy())[0]

    benchmark.pedantic(run, rounds=2 if seconds * batch > 100 else 3, warmup_rounds=1)
    audio_secs = seconds * batch
    benchmark.extra_info.update(rtf=benchmark.stats.stats.min / audio_secs, peak_rss_mb=_peak_rss_mb())
    name = f"{impl} (RTF {benchmark.stats.stats.min / audio_secs:.4f}, peak RSS {_peak_rss_mb():.0f} MB)"
    record(
        f"GigaAM v3 encoder, {seconds:.0f} s x {batch}, {torch.get_num_threads()} threads",
        "reference",
        impl if impl == "reference" else name,
        benchmark,
    )
    np.testing.assert_equal(np.isfinite(run().float().numpy()).all(), True)
