"""Parakeet TDT vs transformers' ParakeetForTDT at a small random config.

The same weights are saved as a transformers directory and as a `.nemo` archive; both load
through polyasr and must give: features equal to ParakeetFeatureExtractor's (1e-4), encoder
output within 1e-4 (fp32), greedy tokens / frames / durations identical to `generate`, single
and in a padded batch, by the C++ loop and by the batched device loop alike.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_close, batch_log_mel_tolerance, encoder_arithmetic, transducer_confidence_tolerance
from parakeet_refs import (
    feature_extractor,
    hf_greedy,
    random_model,
    tiny_config,
    train_sentencepiece,
    write_hf_dir,
    write_nemo,
)

from polyasr.backends.torch import TorchBackend
from polyasr.models import layers
from polyasr.models.parakeet import model as net
from polyasr.models.parakeet.checkpoint import read_parakeet_checkpoint
from polyasr.models.parakeet.config import ParakeetConfig
from polyasr.models.parakeet.pipeline import ParakeetModel

pytest.importorskip("transformers")  # the reference the checkpoints are made from

VOCAB = 48


def _signals(seed=0):
    rng = np.random.default_rng(seed)
    # noise with a slow envelope, so features vary over time; lengths far apart in one batch
    out = []
    for n in (16000 * 3 + 123, 16000 + 7, 16000 * 2 - 50):
        env = 0.2 + np.abs(np.sin(np.arange(n) / 1600.0))
        out.append((rng.standard_normal(n) * 0.1 * env).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def sp_model():
    return train_sentencepiece(VOCAB)


@pytest.fixture(scope="module", params=["default", "no-bias-no-xscale"])
def reference(request, sp_model, tmp_path_factory):
    """(transformers model, feature extractor, {format: polyasr ParakeetModel})."""
    over = (
        {} if request.param == "default" else {"attention_bias": False, "convolution_bias": False, "scale_input": False}
    )
    config = tiny_config(VOCAB, **over)
    # blank bias chosen so that both variants emit tokens on every item (and blanks between them)
    model, fe = random_model(config, seed=3, blank_bias=1.0 if not over else -1.0), feature_extractor(config)
    root = tmp_path_factory.mktemp(f"parakeet-{request.param}")
    paths = {
        "hf": write_hf_dir(model, fe, sp_model, root / "hf"),
        "nemo": write_nemo(model, fe, sp_model, root / "tiny.nemo"),
        # jointnet.dropout 0: NeMo's joint_net has no Dropout module, the output layer is joint_net.1
        "nemo-no-dropout": write_nemo(model, fe, sp_model, root / "nodrop.nemo", joint_dropout=0.0),
    }
    B = TorchBackend("cpu", "float32")
    loaded = {fmt: ParakeetModel("parakeet-tdt-v3", read_parakeet_checkpoint(p), B) for fmt, p in paths.items()}
    return model, fe, loaded


def _hf_inputs(fe, signals):
    inputs = fe([s for s in signals], sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    return inputs["input_features"], inputs["attention_mask"]


def test_config_read_from_both_formats(reference):
    model, _, loaded = reference
    a, b = loaded["hf"].cfg, loaded["nemo"].cfg
    assert a == b
    e = model.config.encoder_config
    assert (a.d_model, a.n_layers, a.n_heads, a.feat_in) == (
        e.hidden_size,
        e.num_hidden_layers,
        e.num_attention_heads,
        e.num_mel_bins,
    )
    assert a.durations == tuple(model.config.durations) and a.blank_id == model.config.blank_token_id


def test_features_match_transformers(reference):
    _, fe, loaded = reference
    signals = _signals()
    hf_feats, hf_mask = _hf_inputs(fe, signals)
    for m in loaded.values():
        feats, frames = m.features(signals)
        np.testing.assert_array_equal(frames, hf_mask.sum(-1).numpy())
        ours = feats.transpose(1, 2)  # (B, T, n_mels)
        tol = batch_log_mel_tolerance(signals, m.cfg.mel_config()).transpose(0, 2, 1)  # (B, T, n_mels)
        for i, n in enumerate(frames):
            assert_close(ours[i, :n], hf_feats[i, :n], tol[i, :n], what=f"item {i}: features")


@pytest.mark.parametrize("fmt", ["hf", "nemo"])
def test_encoder_matches_transformers(reference, fmt):
    model, fe, loaded = reference
    m = loaded[fmt]
    signals = _signals()
    feats, mask = _hf_inputs(fe, signals)
    with torch.no_grad():
        ref = model.get_audio_features(input_features=feats, attention_mask=mask)
    ours_feats, frames = m.features(signals)
    encoded, lengths = net.encode(m.params, m.cfg, m.B, ours_feats, frames)
    proj = net.joint_encoder(m.params, m.B, encoded)
    np.testing.assert_array_equal(lengths, ref.attention_mask.sum(-1).numpy())
    for i, n in enumerate(lengths):
        kw = encoder_arithmetic(m.cfg)
        assert_close(encoded[i, :n], ref.last_hidden_state[i, :n], **kw, what=f"{fmt} item {i}: encoder output")
        assert_close(proj[i, :n], ref.pooler_output[i, :n], **kw, what=f"{fmt} item {i}: joint encoder projection")


def test_padded_batch_equals_single(reference):
    _, _, loaded = reference
    m, signals = loaded["nemo"], _signals()
    feats, frames = m.features(signals)
    batch, lengths = net.encode(m.params, m.cfg, m.B, feats, frames)
    for i, s in enumerate(signals):
        f1, n1 = m.features([s])
        one, l1 = net.encode(m.params, m.cfg, m.B, f1, n1)
        assert l1[0] == lengths[i]
        kw = encoder_arithmetic(m.cfg)
        assert_close(batch[i, : lengths[i]], one[0, : lengths[i]], **kw, what=f"item {i}: batched vs single")


@pytest.mark.parametrize("fmt", ["hf", "nemo", "nemo-no-dropout"])
def test_greedy_matches_generate(reference, fmt):
    model, fe, loaded = reference
    m = loaded[fmt]
    signals = _signals()
    feats, mask = _hf_inputs(fe, signals)
    expected = hf_greedy(model, feats, mask)
    assert sum(len(t) for t, _, _ in expected) > 10, "the random model should emit tokens"
    with torch.no_grad():
        proj, lengths = m.encode(signals)
        host = m.transducer.greedy_host(m.B.to_numpy(proj), lengths, max_symbols=1000)
        device = m.transducer.greedy_device(proj, lengths, max_symbols=1000)
    for i, (toks, frames, durs) in enumerate(expected):
        for name, hyp in (("C++", host[i]), ("device loop", device[i])):
            assert hyp.tokens.tolist() == toks, f"{fmt} {name} item {i}: tokens differ"
            assert hyp.frames.tolist() == frames, f"{fmt} {name} item {i}: frames differ"
            assert hyp.durations.tolist() == durs, f"{fmt} {name} item {i}: durations differ"
        tol = transducer_confidence_tolerance(m.cfg)
        assert_close(host[i].confidences, device[i].confidences, tol, what="confidences")
    # one by one gives the same as the padded batch
    for i, s in enumerate(signals):
        with torch.no_grad():
            (one,) = m.recognize([s])
        assert one.tokens.tolist() == expected[i][0]


def _stem_frame_bytes(cfg) -> int:
    """The stem's first-stage output per input frame, the unit STEM_PIECE_BYTES counts in."""
    return cfg.subsampling_conv_channels * (cfg.feat_in // 2 + 1) * 2


@pytest.mark.parametrize("piece", ["items", "spans of 5 units", "spans of one unit"])
def test_stem_in_pieces_equals_one_pass(reference, monkeypatch, piece):
    """The stem runs in pieces (groups of items, or spans of an item's time with context cut off
    again); on a ragged batch the result must not change, at any piece size."""
    _, _, loaded = reference
    m, signals = loaded["nemo"], _signals()
    feats, frames = m.features(signals)
    whole, lengths = net.encode(m.params, m.cfg, m.B, feats, frames)
    unit, per_frame = m.cfg.subsampling_factor, _stem_frame_bytes(m.cfg)
    size = {"items": per_frame * feats.shape[-1], "spans of 5 units": per_frame * 5 * unit, "spans of one unit": 1}
    monkeypatch.setattr(net, "STEM_PIECE_BYTES", size[piece])
    calls = []
    monkeypatch.setattr(net, "_stem_slice", lambda *a, f=net._stem_slice, c=calls: c.append(1) or f(*a))
    pieces, lengths2 = net.encode(m.params, m.cfg, m.B, feats, frames)
    assert len(calls) >= len(signals) if piece == "items" else len(calls) > len(signals) * 2
    np.testing.assert_array_equal(lengths, lengths2)
    assert_close(pieces, whole, **encoder_arithmetic(m.cfg), what=f"stem in {piece}")


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("factor", [4, 8])
def test_stem_edge_frames_cover_every_kernel(monkeypatch, kernel, factor):
    """`stem_edge_frames` is enough context for any stem kernel and depth: spans of one subsampling
    unit give the one-pass output on a ragged batch (random weights, torch fp32)."""
    cfg = ParakeetConfig(
        features=16, feat_in=16, n_layers=1, d_model=32, n_heads=2, subsampling_factor=factor,
        subsampling_conv_channels=8, subsampling_conv_kernel_size=kernel,
    )  # fmt: skip
    B, rng = TorchBackend("cpu", "float32"), np.random.default_rng(kernel)
    shapes = net.param_shapes(cfg)
    stem = {k: rng.standard_normal(s).astype(np.float32) * 0.3 for k, s in shapes.items() if "pre_encode" in k}
    params = layers.prepare({k: B.param(v) for k, v in stem.items()}, shapes, B)
    feats = B.asarray(rng.standard_normal((3, 203, cfg.feat_in)).astype(np.float32))
    for batch, lengths in ((feats, np.array([203, 150, 77])), (feats[:1], np.array([203]))):
        monkeypatch.setattr(net, "STEM_PIECE_BYTES", 1 << 30)
        whole, n_whole = net._stem(params, cfg, B, batch, lengths)
        monkeypatch.setattr(net, "STEM_PIECE_BYTES", 1)
        calls = []
        monkeypatch.setattr(net, "_stem_slice", lambda *a, f=net._stem_slice, c=calls: c.append(1) or f(*a))
        pieces, n_pieces = net._stem(params, cfg, B, batch, lengths)
        monkeypatch.undo()
        assert len(calls) >= 203 // factor * len(lengths), "the stem did not run in spans"
        np.testing.assert_array_equal(n_whole, n_pieces)
        assert tuple(pieces.shape) == tuple(whole.shape)
        # each stage's sums (C x k x k terms, the output linear C x F') round on both sides
        longest = cfg.subsampling_conv_channels * max(kernel * kernel, cfg.feat_in // factor + 1)
        depth = cfg.subsampling_stages + 1
        assert_close(pieces, whole, reduction=longest, depth=depth, what=f"stem in spans, batch {len(lengths)}")


def test_position_projections_are_held_and_read_as_slices(reference):
    """Each layer's linear_pos table is computed once for the longest length seen (rounded up, up
    to the cap) and shorter inputs read its middle rows; every length's heads equal the reference's
    `relative_k_proj` of the relative-position sinusoids, computed in float64. A length past the
    cap is projected per call and not held."""
    model, _, loaded = reference
    m = loaded["nemo"]
    cfg, h = m.cfg, m.cfg.n_heads
    sd = {k: v.double().numpy() for k, v in model.state_dict().items() if k.endswith("relative_k_proj.weight")}
    weights = [next(v for k, v in sd.items() if f"layers.{i}." in k) for i in range(cfg.n_layers)]
    held = net.PositionProjections(max_frames=100)
    held.get(m.params, cfg, m.B, 30)
    assert held.held[0] == held.ROUND
    held.get(m.params, cfg, m.B, 70)
    frames, tables = held.held
    assert frames == 100 and len(tables) == cfg.n_layers
    for length in (70, 30, 5, 1, 100, 130):
        got = held.get(m.params, cfg, m.B, length)
        assert held.held[1] is tables, f"length {length} replaced the held table"
        table = net.relative_positions(m.B, length, cfg.d_model).numpy().astype(np.float64)
        for i, (g, w) in enumerate(zip(got, weights, strict=True)):
            split = lambda y: y.reshape(y.shape[0], h, -1).transpose(1, 0, 2)  # noqa: E731
            # fp32 rounding of a d-term sum: u * sqrt(d) * sum |x||w|, a few roundings per term
            tol = 8 * 2.0**-24 * np.sqrt(cfg.d_model) * split(np.abs(table) @ np.abs(w).T)
            err = np.abs(g.numpy() - split(table @ w.T))
            assert tuple(g.shape) == (h, 2 * length - 1, cfg.d_model // h)
            assert (err <= tol).all(), f"T={length} layer {i}: off by {err.max():.3g}"
