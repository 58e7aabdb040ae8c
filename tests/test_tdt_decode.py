"""polyasr._decode.tdt_greedy (through models/tdt_decode.py) against a float64 numpy reference of the
label-looping TDT loop, torch's LSTM/Linear modules, and transformers' ParakeetForTDT.generate."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, tolerance
from hypothesis import given, settings
from hypothesis import strategies as st

from polyasr import _decode
from polyasr.models.tdt_decode import tdt_greedy

NAMES = ("embed", "w_ih", "w_hh", "bias", "pred_w", "pred_b", "out_w", "out_b")


def make_weights(rng, V1, P, J, L, D, blank_bias=0.0, scale=1.0):
    """Random predictor + joint weights (float32), ~1/sqrt(fan_in) so that logits are O(scale)."""

    def n(*shape, fan=1):
        return (rng.standard_normal(shape) * scale / np.sqrt(fan)).astype(np.float32)

    w = dict(
        embed=n(V1, P),
        w_ih=n(L, 4 * P, P, fan=P),
        w_hh=n(L, 4 * P, P, fan=P),
        bias=n(L, 4 * P),
        pred_w=n(J, P, fan=P),
        pred_b=n(J),
        out_w=n(V1 + D, J, fan=J) * 3,
        out_b=n(V1 + D),
    )
    w["out_b"][V1 - 1] += blank_bias
    return w


def reference(enc, length, w, durations, blank, max_symbols):
    """The spec, one item, in float64: (tokens, frames, durations, confidences) as lists."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    L, P, V1 = w["w_ih"].shape[0], w["embed"].shape[1], w["embed"].shape[0]
    h, c = np.zeros((L, P)), np.zeros((L, P))
    sigmoid = lambda x: 1 / (1 + np.exp(-x))

    def predictor(token):
        x = w["embed"][token]
        for layer in range(L):
            i, f, g, o = np.split(w["w_ih"][layer] @ x + w["w_hh"][layer] @ h[layer] + w["bias"][layer], 4)
            c[layer] = sigmoid(f) * c[layer] + sigmoid(i) * np.tanh(g)
            h[layer] = x = sigmoid(o) * np.tanh(c[layer])
        return w["pred_w"] @ x + w["pred_b"]

    pred, t, run, out = predictor(blank), 0, 0, ([], [], [], [])
    while t < length:
        logits = w["out_w"] @ np.maximum(enc[t].astype(np.float64) + pred, 0) + w["out_b"]
        k, d = int(np.argmax(logits[:V1])), int(durations[np.argmax(logits[V1:])])
        if k == blank:
            t, run = t + max(d, 1), 0
            continue
        p = np.exp(logits[:V1] - logits[k])
        for lst, v in zip(out, (k, t, d, 1 / p.sum())):
            lst.append(v)
        pred = predictor(k)
        if d > 0:
            t, run = t + d, 0
        else:
            run += 1
            if run >= max_symbols:
                t, run = t + 1, 0
    return out


def check_against_reference(enc, lengths, w, durations, blank, max_symbols, threads=1):
    hyps = tdt_greedy(enc, lengths, **w, durations=durations, blank=blank, max_symbols=max_symbols, threads=threads)
    assert len(hyps) == len(lengths)
    for hyp, x, n in zip(hyps, enc, lengths, strict=True):
        tokens, frames, durs, confs = reference(x, n, w, np.asarray(durations), blank, max_symbols)
        assert hyp.tokens.tolist() == tokens and hyp.frames.tolist() == frames and hyp.durations.tolist() == durs
        # probabilities (<= 1) after the LSTM layers and the joint's hidden-wide sum
        tol = tolerance(magnitude=1.0, reduction=w["out_w"].shape[-1], depth=len(w["w_ih"]) + 2)
        assert_close(hyp.confidences, confs, tol, what="confidences")
        assert (hyp.tokens.dtype, hyp.frames.dtype, hyp.durations.dtype, hyp.confidences.dtype) == (
            np.int32,
            np.int32,
            np.int32,
            np.float32,
        )
    return hyps


@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("durations", [[0, 1, 2, 3, 4], [0, 2, 3, 7]])
@pytest.mark.parametrize("V1, P, J", [(20, 16, 16), (61, 32, 24), (37, 19, 29)])
def test_matches_reference(V1, P, J, L, durations):
    rng = np.random.default_rng(V1 * 100 + P + L)
    w = make_weights(rng, V1, P, J, L, len(durations), blank_bias=1.0)
    lengths = np.array([0, 1, 3, 40, 17])
    enc = rng.standard_normal((len(lengths), 40, J)).astype(np.float32)
    hyps = check_against_reference(enc, lengths, w, durations, blank=V1 - 1, max_symbols=3)
    assert len(hyps[0].tokens) == 0 and sum(len(h.tokens) for h in hyps) > 10  # the test exercises emissions


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(0, 30), st.integers(1, 4), st.integers(1, 3))
def test_property_matches_reference(seed, batch, frames, max_symbols, threads):
    rng = np.random.default_rng(seed)
    V1, P, J, L = int(rng.integers(2, 30)), int(rng.integers(1, 20)), int(rng.integers(1, 20)), int(rng.integers(1, 3))
    durations = sorted(rng.choice(6, size=int(rng.integers(1, 5)), replace=False).tolist())
    w = make_weights(rng, V1, P, J, L, len(durations), blank_bias=float(rng.uniform(-1, 2)))
    lengths = rng.integers(0, frames + 1, size=batch)
    enc = rng.standard_normal((batch, frames, J)).astype(np.float32)
    check_against_reference(
        enc, lengths, w, durations, blank=int(rng.integers(0, V1)), max_symbols=max_symbols, threads=threads
    )


def test_results_do_not_depend_on_batching_or_threads():
    rng = np.random.default_rng(1)
    w = make_weights(rng, 50, 24, 20, 2, 5, blank_bias=1.0)
    enc = rng.standard_normal((9, 30, 20)).astype(np.float32)
    lengths = rng.integers(0, 31, size=9)
    args = dict(**w, durations=[0, 1, 2, 3, 4], blank=49)
    alone = [tdt_greedy(enc[i : i + 1], lengths[i : i + 1], **args)[0] for i in range(9)]
    for threads in (1, 2, 4, 0):
        for a, b in zip(tdt_greedy(enc, lengths, **args, threads=threads), alone, strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(a, b))


def control_weights(V1=8, J=2, D=5):
    """Weights whose decisions are set by the frame: feature 0 means blank, feature 1 means token 5;
    duration index 0 (duration 0) wins on both. The predictor is cut off from the joint."""
    rng = np.random.default_rng(0)
    w = make_weights(rng, V1, 4, J, 1, D)
    w["pred_w"][:], w["pred_b"][:], w["out_b"][:] = 0, 0, 0
    w["out_w"][:] = 0
    w["out_w"][V1 - 1, 0] = w["out_w"][5, 1] = 10  # blank = V1 - 1
    w["out_w"][V1, :] = 5
    return w


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_duration_zero_token_stops_after_max_symbols(max_symbols):
    w = control_weights()
    enc = np.tile(np.array([0, 1], np.float32), (1, 6, 1))  # token 5 with duration 0 on every frame
    (hyp,) = check_against_reference(enc, [6], w, [0, 1, 2, 3, 4], blank=7, max_symbols=max_symbols)
    assert hyp.frames.tolist() == np.repeat(np.arange(6), max_symbols).tolist()
    assert set(hyp.tokens.tolist()) == {5} and set(hyp.durations.tolist()) == {0}


def test_blank_with_duration_zero_moves_one_frame():
    w = control_weights()
    enc = np.zeros((1, 7, 2), np.float32)
    enc[0, 0::2, 0] = 1  # even frames: blank, duration 0; odd frames: token 5, duration 0
    enc[0, 1::2, 1] = 1
    (hyp,) = check_against_reference(enc, [7], w, [0, 1, 2, 3, 4], blank=7, max_symbols=2)
    assert hyp.frames.tolist() == [1, 1, 3, 3, 5, 5]
    (hyp,) = tdt_greedy(enc[:, ::2].copy(), None, **w, durations=[0, 1, 2, 3, 4], blank=7)
    assert len(hyp.tokens) == 0


def test_duration_value_not_index_moves_the_frame():
    w = control_weights(D=3)
    w["out_w"][8, :], w["out_w"][10, :] = 0, 5  # duration index 2 -> value 7
    enc = np.tile(np.array([0, 1], np.float32), (1, 20, 1))
    (hyp,) = check_against_reference(enc, [20], w, [0, 1, 7], blank=7, max_symbols=2)
    assert hyp.frames.tolist() == [0, 7, 14] and hyp.durations.tolist() == [7, 7, 7]


def test_empty_batch_and_empty_items():
    w = make_weights(np.random.default_rng(0), 10, 8, 8, 1, 2)
    assert tdt_greedy(np.zeros((0, 5, 8), np.float32), None, **w, durations=[0, 1], blank=9) == []
    hyps = tdt_greedy(np.zeros((3, 0, 8), np.float32), None, **w, durations=[0, 1], blank=9)
    assert [len(h.tokens) for h in hyps] == [0, 0, 0]


def torch_loop(enc, length, modules, durations, blank, max_symbols):
    """The same loop over torch modules (nn.Embedding, nn.LSTM, nn.Linear): guards the gate order and
    the bias summation."""
    import torch

    embed, lstm, pred, out = modules
    V1, state = embed.num_embeddings, None
    with torch.no_grad():

        def step(token):
            y, new_state = lstm(embed(torch.tensor([[token]])), state)
            return pred(y[0, 0]), new_state

        g, state = step(blank)
        t, run, tokens, frames = 0, 0, [], []
        while t < length:
            logits = out(torch.relu(torch.from_numpy(enc[t]) + g))
            k, d = int(logits[:V1].argmax()), durations[int(logits[V1:].argmax())]
            if k == blank:
                t, run = t + max(d, 1), 0
                continue
            tokens.append(k), frames.append(t)
            g, state = step(k)
            run = 0 if d > 0 else run + 1
            t += d if d > 0 else int(run >= max_symbols)
            run = 0 if run >= max_symbols else run
    return tokens, frames


@pytest.mark.parametrize("L", [1, 2])
def test_matches_torch_modules(L):
    torch = pytest.importorskip("torch")
    V1, P, J, durations = 33, 24, 20, [0, 1, 2, 3, 4]
    embed, lstm = torch.nn.Embedding(V1, P), torch.nn.LSTM(P, P, num_layers=L)
    pred, out = torch.nn.Linear(P, J), torch.nn.Linear(J, V1 + len(durations))
    with torch.no_grad():
        out.weight.mul_(6), out.bias[V1 - 1].add_(0.5)
        for p in lstm.parameters():
            p.copy_(torch.randn_like(p) * 0.5)  # larger than the default init: the state matters
    layer = lambda name: torch.stack([getattr(lstm, f"{name}_l{i}") for i in range(L)])
    w = dict(
        embed=embed.weight,
        w_ih=layer("weight_ih"),
        w_hh=layer("weight_hh"),
        bias=layer("bias_ih") + layer("bias_hh"),
        pred_w=pred.weight,
        pred_b=pred.bias,
        out_w=out.weight,
        out_b=out.bias,
    )
    enc = torch.randn(3, 50, J)
    lengths = torch.tensor([50, 23, 0])
    hyps = tdt_greedy(enc, lengths, **w, durations=torch.tensor(durations), blank=V1 - 1, max_symbols=2)
    for hyp, x, n in zip(hyps, enc.numpy(), lengths.tolist(), strict=True):
        assert (hyp.tokens.tolist(), hyp.frames.tolist()) == torch_loop(
            x, n, (embed, lstm, pred, out), durations, V1 - 1, 2
        )
    assert len(hyps[0].tokens) > 10


def test_matches_transformers_parakeet_generate():
    """ParakeetForTDT.generate on a tiny model whose encoder is replaced by given projections. It has no
    max_symbols guard (so max_symbols is set out of reach and duration 0 made rare: a token repeated at
    one frame would fill generate's buffer) and advances by the duration index (so durations are 0..D-1)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.parakeet.modeling_parakeet import ParakeetEncoderModelOutput

    V1, P, T = 40, 16, 30
    enc_cfg = dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_mel_bins=16,
        subsampling_conv_channels=8,
    )
    cfg = transformers.ParakeetTDTConfig(
        vocab_size=V1,
        blank_token_id=V1 - 1,
        decoder_hidden_size=P,
        num_decoder_layers=2,
        encoder_config=enc_cfg,
        pad_token_id=V1 - 1,
    )
    torch.manual_seed(0)
    model = transformers.ParakeetForTDT(cfg).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        model.joint.head.weight.mul_(8), model.joint.head.bias[V1].sub_(4)
    enc = torch.randn(2, T, P)
    lengths = torch.tensor([T, 17])
    mask = torch.arange(T)[None] < lengths[:, None]
    model.get_audio_features = lambda **kw: ParakeetEncoderModelOutput(
        last_hidden_state=enc, pooler_output=enc, attention_mask=mask
    )
    features = torch.zeros(2, 8 * T, enc_cfg["num_mel_bins"])  # sizes generate's buffer: >= T frames
    with torch.no_grad():
        out = model.generate(
            features,
            attention_mask=torch.ones(2, 8 * T, dtype=torch.long),
            decoder_start_token_id=V1 - 1,
            max_new_tokens=10 * T,
        )
    lstm, dec = model.decoder.lstm, model.decoder
    layer = lambda name: torch.stack([getattr(lstm, f"{name}_l{i}") for i in range(2)])
    hyps = tdt_greedy(
        enc,
        lengths,
        dec.embedding.weight,
        layer("weight_ih"),
        layer("weight_hh"),
        layer("bias_ih") + layer("bias_hh"),
        dec.decoder_projector.weight,
        dec.decoder_projector.bias,
        model.joint.head.weight,
        model.joint.head.bias,
        durations=[0, 1, 2, 3, 4],
        blank=V1 - 1,
        max_symbols=10**6,
    )
    for hyp, seq, durs, n in zip(hyps, out.sequences.tolist(), out.durations.tolist(), lengths, strict=True):
        frames = np.cumsum([0] + durs[1:-1])  # seq[0] is the start token; a step's frame sums the earlier steps
        emitted = [i for i, s in enumerate(seq[1:]) if s != V1 - 1 and frames[i] < n]  # then padding
        assert hyp.tokens.tolist() == [seq[1 + i] for i in emitted]
        assert hyp.frames.tolist() == [int(frames[i]) for i in emitted]
    assert len(hyps[0].tokens) > 5


def bad_case(**changes):
    rng = np.random.default_rng(0)
    args = dict(
        enc_proj=np.zeros((2, 5, 8), np.float32),
        lengths=np.array([5, 3]),
        **make_weights(rng, 10, 4, 8, 2, 3),
        durations=np.array([0, 1, 2]),
        blank=9,
        max_symbols=2,
    )
    args.update(changes)
    return args


W = make_weights(np.random.default_rng(0), 10, 4, 8, 2, 3)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(enc_proj=np.zeros((2, 5, 8), np.float64)), "enc_proj must be a 3-D float32 array, got 3-D float64"),
        (dict(enc_proj=np.zeros((2, 5), np.float32)), "enc_proj must be a 3-D float32 array, got 2-D"),
        (dict(out_w=W["out_w"].astype(np.float16)), "out_w must be a 2-D float32 array, got 2-D float16"),
        (dict(w_ih=W["w_ih"][0]), "w_ih must be a 3-D float32 array, got 2-D"),
        (dict(w_hh=W["w_hh"][:, :8]), r"w_hh must have shape \(2, 16, 4\), got \(2, 8, 4\)"),
        (dict(bias=W["bias"][:1]), r"bias must have shape \(2, 16\)"),
        (dict(pred_w=W["pred_w"][:, :3]), r"pred_w must have shape \(8, 4\)"),
        (dict(pred_b=W["pred_b"][:7]), r"pred_b must have shape \(8,\)"),
        (dict(out_w=W["out_w"][:12]), r"out_w must have shape \(13, 8\)"),
        (dict(out_b=W["out_b"][:12]), r"out_b must have shape \(13,\)"),
        (dict(enc_proj=np.zeros((2, 5, 7), np.float32)), r"pred_w must have shape \(7, 4\)"),
        (dict(lengths=np.array([5])), r"lengths must have shape \(2,\)"),
        (dict(lengths=np.array([6, 1])), r"lengths must lie in \[0, 5\]"),
        (dict(lengths=np.array([-1, 1])), r"lengths must lie in \[0, 5\]"),
        (dict(lengths=np.array([1.0, 1.0])), "lengths must be a 1-D integer array, got 1-D float64"),
        (dict(durations=np.array([], np.int64)), "durations must not be empty"),
        (dict(durations=np.array([0, -1, 2])), "durations must be >= 0"),
        (dict(durations=np.array([[0, 1, 2]])), "durations must be a 1-D integer array"),
        (dict(blank=10), r"blank 10 is outside the tokens \[0, 10\)"),
        (dict(blank=-1), r"blank -1 is outside"),
        (dict(max_symbols=0), "max_symbols must be >= 1"),
    ],
)
def test_bad_input_is_a_value_error(changes, message):
    with pytest.raises(ValueError, match=message):
        tdt_greedy(**bad_case(**changes))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(w_hh=W["w_hh"][:, :8]), r"w_hh must have shape \(2, 16, 4\), got \(2, 8, 4\)"),
        (dict(out_b=W["out_b"][:12]), r"out_b must have shape \(13,\), got \(12,\)"),
        (dict(enc_proj=np.zeros((2, 5), np.float32)), "enc_proj must be 3-D"),
        (dict(lengths=np.array([6, 1])), r"lengths\[0\] = 6 is outside \[0, 5\]"),
        (dict(durations=np.array([], np.int64)), "durations must be a non-empty 1-D array"),
        (dict(durations=np.array([0, -1, 2])), r"durations\[1\] = -1"),
        (dict(blank=10), r"blank 10 is outside the tokens \[0, 10\)"),
        (dict(max_symbols=0), "max_symbols must be >= 1"),
        (dict(threads=-1), "threads must be >= 0"),
    ],
)
def test_extension_itself_rejects_bad_input(changes, message):
    """The compiled function validates on its own too (it is public as polyasr._decode)."""
    a = {k: np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v for k, v in bad_case(**changes).items()}
    with pytest.raises(ValueError, match=message):
        _decode.tdt_greedy(a.pop("enc_proj"), a.pop("lengths"), *(a.pop(n) for n in NAMES), **a)


def test_extension_refuses_conversions():
    a = bad_case(enc_proj=np.zeros((2, 5, 8), np.float64))
    with pytest.raises(TypeError):
        _decode.tdt_greedy(a.pop("enc_proj"), a.pop("lengths"), *(a.pop(n) for n in NAMES), **a)
