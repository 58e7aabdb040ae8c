"""TDT greedy decoding (polyasr._decode.tdt_greedy) vs the same loop in eager torch on the CPU and vs
transformers' ParakeetForTDT.generate, at Parakeet TDT 0.6B v3's decoder sizes.

V1 = 8193 tokens (blank = 8192), durations [0, 1, 2, 3, 4], predictor P = 640 (2-layer LSTM), joint
J = 640; random weights ~ 1/sqrt(fan_in), the blank logit biased so that about 65% of the decoder
steps are blanks (as in real TDT output); random enc_proj for 10 s (125 frames at 80 ms) and 60 s
(750 frames), batch 1 and 8 (60 s x 8 only with POLYASR_BENCH_FULL=1). transformers' generate cannot
take precomputed encoder outputs, so its get_audio_features is replaced by one returning them: what is
timed is its own greedy loop. A "step" is one joint evaluation of one item; the group title gives
their number and blank share.
Run: `pytest bench/bench_tdt.py --benchmark-only`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import quick_or_full, record

from polyasr import _decode
from polyasr.models.tdt_decode import tdt_greedy

V1, P, J, L, BLANK, MAX_SYMBOLS = 8193, 640, 640, 2, 8192, 10
DURATIONS = [0, 1, 2, 3, 4]
CASES = [(1, 125), (8, 125), (1, 750)] + quick_or_full([], [(8, 750)])  # (batch, frames): 10 s, 60 s at 80 ms
BASELINE = "torch eager loop"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The extension runs one thread unless told otherwise; torch gets one too (on a loaded 2-core
    machine its second thread made the eager loop ~2x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights():
    return make_weights()


def make_weights():
    """Random float32 weights at the real sizes, the blank biased to win ~2/3 of the steps."""
    rng = np.random.default_rng(0)

    def n(*shape, fan=1):
        return (rng.standard_normal(shape) / np.sqrt(fan)).astype(np.float32)

    w = dict(
        embed=n(V1, P),
        w_ih=n(L, 4 * P, P, fan=P),
        w_hh=n(L, 4 * P, P, fan=P),
        bias=n(L, 4 * P) * 0.1,
        pred_w=n(J, P, fan=P),
        pred_b=n(J) * 0.1,
        out_w=n(V1 + len(DURATIONS), J, fan=J),
        out_b=n(V1 + len(DURATIONS)) * 0.1,
    )
    # Bias the blank so that it wins ~65% of joint evaluations over predictor states of random tokens.
    m = modules(w)
    with torch.no_grad():
        y, _ = m["lstm"](m["embed"](torch.from_numpy(rng.integers(0, V1, (512, 1)))))
        x = torch.relu(torch.from_numpy(n(512, J)) + m["pred"](y[:, 0]))  # states along a token history
        logits = m["out"](x)[:, :V1]
    margin = logits[:, :BLANK].max(-1).values - logits[:, BLANK]
    w["out_b"][BLANK] += float(np.quantile(margin.numpy(), 0.65))
    # Keep duration 0 out of reach: random weights otherwise fall into a token repeated at one frame until
    # max_symbols, which transformers' TDT generate (it has no such guard) only leaves at max_new_tokens.
    w["out_b"][V1] -= 3.0
    return w


def modules(w):
    """torch modules holding the weights: an nn.LSTM (as transformers runs it) and the same layers as
    nn.LSTMCell (the faster eager step on CPU); both take the summed bias as b_ih, with b_hh = 0."""
    embed, lstm = torch.nn.Embedding(V1, P), torch.nn.LSTM(P, P, num_layers=L)
    cells = [torch.nn.LSTMCell(P, P) for _ in range(L)]
    pred, out = torch.nn.Linear(P, J), torch.nn.Linear(J, V1 + len(DURATIONS))
    with torch.no_grad():
        embed.weight.copy_(torch.from_numpy(w["embed"]))
        for i, cell in enumerate(cells):
            for mod, suffix in ((lstm, f"_l{i}"), (cell, "")):
                getattr(mod, f"weight_ih{suffix}").copy_(torch.from_numpy(w["w_ih"][i]))
                getattr(mod, f"weight_hh{suffix}").copy_(torch.from_numpy(w["w_hh"][i]))
                getattr(mod, f"bias_ih{suffix}").copy_(torch.from_numpy(w["bias"][i]))
                getattr(mod, f"bias_hh{suffix}").zero_()
        for lin, name in ((pred, "pred"), (out, "out")):
            lin.weight.copy_(torch.from_numpy(w[f"{name}_w"])), lin.bias.copy_(torch.from_numpy(w[f"{name}_b"]))
    return dict(embed=embed, lstm=lstm, cells=cells, pred=pred, out=out)


@torch.no_grad()
def predictor(m, tokens, h, c, rows):
    """LSTMCell steps for batch rows `rows` fed `tokens`; updates h, c (L, B, P) in place."""
    x = m["embed"](tokens)
    for layer, cell in enumerate(m["cells"]):
        x, c[layer, rows] = cell(x, (h[layer, rows], c[layer, rows]))
        h[layer, rows] = x
    return m["pred"](x)


@torch.no_grad()
def torch_loop(enc, m):
    """The eager device loop, on CPU: all unfinished items step together (joint on the batch, LSTM cells
    on the items that emitted). Returns per-item token lists, the number of steps and of blank steps."""
    B, T, _ = enc.shape
    dur, everyone = torch.tensor(DURATIONS), torch.arange(B)
    h, c = torch.zeros(L, B, P), torch.zeros(L, B, P)
    pred = predictor(m, torch.full((B,), BLANK), h, c, everyone)
    t, run = torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long)
    tokens, steps, blanks = [[] for _ in range(B)], 0, 0
    while (idx := (t < T).nonzero()[:, 0]).numel():
        logits = m["out"](torch.relu(enc[idx, t[idx]] + pred[idx]))
        k, d = logits[:, :V1].argmax(-1), dur[logits[:, V1:].argmax(-1)]
        blank = k == BLANK
        steps, blanks = steps + idx.numel(), blanks + int(blank.sum())
        run_next = torch.where(blank | (d > 0), 0, run[idx] + 1)
        forced = run_next >= MAX_SYMBOLS
        t[idx] += torch.where(forced, 1, torch.where(blank, d.clamp(min=1), d))
        run[idx] = torch.where(forced, 0, run_next)
        for i, tok in zip(idx[~blank].tolist(), k[~blank].tolist()):
            tokens[i].append(tok)
        feed = ~blank & (t[idx] < T)
        if feed.any():
            pred[idx[feed]] = predictor(m, k[feed], h, c, idx[feed])
    return tokens, steps, blanks


def hf_model(w):
    """transformers' ParakeetForTDT with these decoder/joint weights and a stub encoder."""
    import transformers

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
        blank_token_id=BLANK,
        pad_token_id=BLANK,
        decoder_hidden_size=P,
        num_decoder_layers=L,
        durations=DURATIONS,
        max_symbols_per_step=MAX_SYMBOLS,
        encoder_config=enc_cfg,
    )
    model = transformers.ParakeetForTDT(cfg).eval()
    m = modules(w)
    m["lstm"].batch_first = True  # as transformers' decoder runs it
    model.decoder.embedding, model.decoder.lstm, model.decoder.decoder_projector = m["embed"], m["lstm"], m["pred"]
    model.joint.head = m["out"]
    return model


@torch.no_grad()
def hf_generate(model, enc):
    from transformers.models.parakeet.modeling_parakeet import ParakeetEncoderModelOutput

    B, T, _ = enc.shape
    mask = torch.ones(B, T, dtype=torch.long)
    model.get_audio_features = lambda **kw: ParakeetEncoderModelOutput(
        last_hidden_state=enc, pooler_output=enc, attention_mask=mask
    )
    out = model.generate(
        torch.zeros(B, 8 * T, 16),
        attention_mask=torch.ones(B, 8 * T, dtype=torch.long),
        decoder_start_token_id=BLANK,
        max_new_tokens=MAX_SYMBOLS * T,
    )
    # Without an eos_token_id, generate does not pad items that have finished while others go on: a
    # step counts only while its frame (the sum of the earlier steps' durations; seq[0] is the start
    # token) is inside the item.
    hyps = []
    for seq, durs in zip(out.sequences.tolist(), out.durations.tolist()):
        frames = np.cumsum([0] + durs[1:-1])
        hyps.append([s for s, f in zip(seq[1:], frames) if s != BLANK and f < T])
    return hyps


@pytest.fixture(scope="module")
def runs(weights):
    """Per case: enc_proj, the torch loop's tokens, and the group title with the step counts."""
    rng, out = np.random.default_rng(1), {}
    m = modules(weights)
    for B, T in CASES:
        enc = rng.standard_normal((B, T, J)).astype(np.float32)
        tokens, steps, blanks = torch_loop(torch.from_numpy(enc), m)
        title = (
            f"TDT greedy, B={B} x {T * 0.08:.0f} s ({T} frames): {steps} steps, "
            f"{100 * blanks / steps:.0f}% blank, {sum(map(len, tokens))} tokens"
        )
        out[B, T] = enc, tokens, title, steps
    return out


def extension(enc, w, threads=1):
    return tdt_greedy(enc, None, **w, durations=DURATIONS, blank=BLANK, max_symbols=MAX_SYMBOLS, threads=threads)


def report(benchmark, title, name, steps):
    benchmark.extra_info.update(
        steps=steps, ms_per_step=1e3 * benchmark.stats.stats.min / steps, steps_per_s=steps / benchmark.stats.stats.min
    )
    record(title, BASELINE, name, benchmark)


@pytest.mark.parametrize("B, T", CASES)
def test_torch_loop(benchmark, weights, runs, B, T):
    enc, _, title, steps = runs[B, T]
    m = modules(weights)
    benchmark.pedantic(torch_loop, args=(torch.from_numpy(enc), m), rounds=3, warmup_rounds=0)
    report(benchmark, title, BASELINE, steps)


@pytest.mark.parametrize("B, T", CASES)
def test_transformers_generate(benchmark, weights, runs, B, T):
    pytest.importorskip("transformers")
    enc, tokens, title, steps = runs[B, T]
    model = hf_model(weights)
    got = benchmark.pedantic(hf_generate, args=(model, torch.from_numpy(enc)), rounds=2, warmup_rounds=0)
    assert got == tokens
    report(benchmark, title, "transformers generate", steps)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("B, T", CASES)
def test_extension(benchmark, weights, runs, B, T, threads):
    if B == 1 and threads > 1:
        pytest.skip("one item runs on one thread")
    enc, tokens, title, steps = runs[B, T]
    hyps = benchmark.pedantic(extension, args=(enc, weights, threads), rounds=5, warmup_rounds=1)
    assert [h.tokens.tolist() for h in hyps] == tokens
    report(benchmark, title, f"polyasr._decode ({threads} thr, {_decode.tdt_kernel_isa()})", steps)
