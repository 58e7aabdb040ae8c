"""Greedy TDT decoding: the prediction network (embedding + LSTM) and joint over encoder frames.

The rule, per utterance (transformers' `ParakeetForTDT.generate`, NeMo's label-looping greedy TDT):

    state = LSTM(embed[blank]) from zeros           # the start symbol is the blank row
    t = 0
    while t < length:
        logits = joint(enc_proj[t], pred(state))     # V + 1 token logits, then one per duration
        k, d = argmax(tokens), durations[argmax(duration logits)]
        if k is blank: t += max(d, 1)                # a blank never stays on its frame
        else:          emit (k, t, d); state = LSTM(embed[k], state)
                       t += d, or after max_symbols tokens in a row at one frame, t += 1

Two implementations of the same rule:
* CPU: the whole loop in C++ (`polyasr._decode.tdt_greedy`, GIL released), fed host fp32 copies
  of the predictor and joint weights; a loop of tiny matrix-vector products is what C++ is for.
  A batch's items are split over the backend's `host_threads` (torch's intra-op threads).
* other devices (CUDA, MLX): `greedy_device`, a batched loop on backend ops where all utterances
  advance together (finished ones are masked), the state update is selected per row, and the host
  is asked whether anyone is still running only every `_SYNC_EVERY` steps, so a GPU is not
  stalled by a round trip per step; on MLX the graph of those steps is evaluated then, once.
Tests prove both give the same tokens, frames and durations.
"""

from __future__ import annotations

import numpy as np

from polyasr.models.parakeet.model import LSTM
from polyasr.models.tdt_decode import TdtHyp, tdt_greedy
from polyasr.models.weight_map import host_float32

_SYNC_EVERY = 8


class Transducer:
    """The prediction network and joint of one checkpoint, on the host (fp32) and on the device."""

    def __init__(self, params: dict, tags: dict, cfg, B):
        self.cfg, self.B = cfg, B
        f32 = {
            name: np.ascontiguousarray(host_float32(params[name], tags.get(name)))
            for name in params
            if name.startswith(("decoder.", "joint.pred", "joint.joint_net"))
        }
        n = cfg.pred_rnn_layers
        self.host = {
            "embed": f32["decoder.prediction.embed.weight"],
            "w_ih": np.ascontiguousarray(np.stack([f32[f"{LSTM}.weight_ih_l{i}"] for i in range(n)])),
            "w_hh": np.ascontiguousarray(np.stack([f32[f"{LSTM}.weight_hh_l{i}"] for i in range(n)])),
            "bias": np.ascontiguousarray(
                np.stack([f32[f"{LSTM}.bias_ih_l{i}"] + f32[f"{LSTM}.bias_hh_l{i}"] for i in range(n)])
            ),
            "pred_w": f32["joint.pred.weight"],
            "pred_b": f32["joint.pred.bias"],
            "out_w": f32["joint.joint_net.2.weight"],
            "out_b": f32["joint.joint_net.2.bias"],
        }
        self.durations = np.asarray(cfg.durations or (1,), dtype=np.int64)
        self._device = None  # device copies, made on first use of greedy_device

    # ---- CPU: C++ -----------------------------------------------------------------------------
    def greedy_host(self, enc_proj: np.ndarray, lengths, max_symbols: int | None = None) -> list[TdtHyp]:
        """enc_proj (B, T, J) float32 host array (the joint's encoder projection), lengths (B,)."""
        h = self.host
        return tdt_greedy(
            np.ascontiguousarray(enc_proj, dtype=np.float32),
            np.asarray(lengths, dtype=np.int64),
            h["embed"],
            h["w_ih"],
            h["w_hh"],
            h["bias"],
            h["pred_w"],
            h["pred_b"],
            h["out_w"],
            h["out_b"],
            self.durations,
            self.cfg.blank_id,
            max_symbols or self.cfg.max_symbols,
            threads=self.B.host_threads,
        )

    # ---- devices: batched loop on backend ops -----------------------------------------------------
    def _weights(self):
        """Device copies of the prediction network and joint, made once: each LSTM layer's input and
        recurrent weights side by side, so a layer step is one linear of [x, h]."""
        if self._device is None:
            B, h = self.B, self.host
            self._device = {
                "embed": B.param(h["embed"]),
                "lstm": [
                    B.prepare_linear(B.param(np.concatenate([w_ih, w_hh], axis=1)))
                    for w_ih, w_hh in zip(h["w_ih"], h["w_hh"], strict=True)
                ],
                "bias": [B.param(b) for b in h["bias"]],
                "pred_w": B.prepare_linear(B.param(h["pred_w"])),
                "pred_b": B.param(h["pred_b"]),
                "out_w": B.prepare_linear(B.param(h["out_w"])),
                "out_b": B.param(h["out_b"]),
                "durations": B.asarray(self.durations),
            }
        return self._device

    def _predict(self, w, tokens, h, c):
        """One LSTM step for every row: tokens (B,), h/c lists of L (B, P) -> pred projection (B, J), h', c'."""
        B = self.B
        x, hs, cs = B.embedding(tokens, w["embed"]), [], []
        for i in range(len(h)):
            gi, gf, gg, go = B.split(
                B.linear(B.concat([x, h[i]], axis=-1), w["lstm"][i], w["bias"][i]), [x.shape[-1]] * 4
            )
            ci = B.sigmoid(gf) * c[i] + B.sigmoid(gi) * B.tanh(gg)
            x = B.sigmoid(go) * B.tanh(ci)
            hs.append(x)
            cs.append(ci)
        return B.linear(x, w["pred_w"], w["pred_b"]), hs, cs

    def greedy_device(self, enc_proj, lengths, max_symbols: int | None = None) -> list[TdtHyp]:
        """enc_proj (B, T, J) backend array, lengths (B,) -> one TdtHyp per item."""
        B, max_symbols = self.B, max_symbols or self.cfg.max_symbols
        batch, n_frames, _ = enc_proj.shape
        if batch == 0 or n_frames == 0:
            return [_empty() for _ in range(batch)]
        w, blank, classes = self._weights(), self.cfg.blank_id, self.cfg.vocab_size + 1
        rows, lens = B.asarray(np.arange(batch)), B.asarray(np.asarray(lengths, dtype=np.int64))
        zeros = [B.zeros((batch, w["embed"].shape[1])) for _ in range(self.cfg.pred_rnn_layers)]
        g, h, c = self._predict(w, B.asarray(np.full(batch, blank, np.int64)), zeros, zeros)
        t = run = B.asarray(np.zeros(batch, np.int64))
        active, steps = t < lens, []
        while len(steps) % _SYNC_EVERY or B.any(active):
            frame = enc_proj[rows, B.where(t < n_frames, t, n_frames - 1)]
            logits = B.linear(B.relu(frame + g), w["out_w"], w["out_b"])
            logp = B.log_softmax(logits[:, :classes])
            k, d = B.argmax(logp), w["durations"][B.argmax(logits[:, classes:])]
            emit, is_blank = active & (k != blank), active & (k == blank)
            steps.append((k, t, d, B.max(logp), emit))
            run = B.where(emit & (d == 0), run + 1, 0)
            force = run >= max_symbols
            t = t + B.where(is_blank, B.where(d > 0, d, 1), B.where(emit, B.where(d > 0, d, B.where(force, 1, 0)), 0))
            run = B.where(force, 0, run)
            g2, h2, c2 = self._predict(w, k, h, c)
            g = B.where(emit[:, None], g2, g)
            h = [B.where(emit[:, None], a, b) for a, b in zip(h2, h, strict=True)]
            c = [B.where(emit[:, None], a, b) for a, b in zip(c2, c, strict=True)]
            active = t < lens
            if len(steps) % _SYNC_EVERY == 0:  # MLX: compute the last few steps' graph in one go
                B.evaluate(active, g, *h, *c, *(x for step in steps[-_SYNC_EVERY:] for x in step))
        return _split_steps(B, steps, batch)


def _empty() -> TdtHyp:
    z = np.zeros(0, np.int32)
    return TdtHyp(z, z, z, np.zeros(0, np.float32))


def _split_steps(B, steps, batch: int) -> list[TdtHyp]:
    """Per-step (B,) records -> per-item arrays of the emitting steps (one host transfer per field);
    the confidence is the chosen token's posterior, exp of its log-probability."""
    k, t, d, logp, emit = (B.to_numpy(B.stack(x, axis=1)) for x in zip(*steps, strict=True))
    conf = np.exp(logp)
    out = []
    for b in range(batch):
        m = emit[b]
        out.append(
            TdtHyp(
                k[b, m].astype(np.int32),
                t[b, m].astype(np.int32),
                d[b, m].astype(np.int32),
                conf[b, m].astype(np.float32),
            )
        )
    return out
