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
* other devices: `greedy_device`, a batched loop in torch where all utterances advance together
  (finished ones are masked), the state update is selected per row, and the host is asked
  whether anyone is still running only every `_SYNC_EVERY` steps, so a GPU is not stalled by a
  round trip per step.
Tests prove both give the same tokens, frames and durations.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from polyasr.models.parakeet.model import LSTM
from polyasr.models.tdt_decode import TdtHyp, tdt_greedy
from polyasr.models.weight_map import host_float32

_SYNC_EVERY = 8


class Transducer:
    """The prediction network and joint of one checkpoint, on the host (fp32) and on the device."""

    def __init__(self, params: dict, tags: dict, cfg, B):
        self.cfg, self.B = cfg, B
        f32 = {name: np.ascontiguousarray(host_float32(params[name], tags.get(name)))
               for name in params if name.startswith(("decoder.", "joint.pred", "joint.joint_net"))}
        n = cfg.pred_rnn_layers
        self.host = {
            "embed": f32["decoder.prediction.embed.weight"],
            "w_ih": np.ascontiguousarray(np.stack([f32[f"{LSTM}.weight_ih_l{i}"] for i in range(n)])),
            "w_hh": np.ascontiguousarray(np.stack([f32[f"{LSTM}.weight_hh_l{i}"] for i in range(n)])),
            "bias": np.ascontiguousarray(np.stack([f32[f"{LSTM}.bias_ih_l{i}"] + f32[f"{LSTM}.bias_hh_l{i}"]
                                                   for i in range(n)])),
            "pred_w": f32["joint.pred.weight"], "pred_b": f32["joint.pred.bias"],
            "out_w": f32["joint.joint_net.2.weight"], "out_b": f32["joint.joint_net.2.bias"],
        }
        self.durations = np.asarray(cfg.durations or (1,), dtype=np.int64)
        self._device = None  # device copies, made on first use of greedy_device

    # ---- CPU: C++ -----------------------------------------------------------------------------
    def greedy_host(self, enc_proj: np.ndarray, lengths, max_symbols: int | None = None) -> list[TdtHyp]:
        """enc_proj (B, T, J) float32 host array (the joint's encoder projection), lengths (B,)."""
        h = self.host
        return tdt_greedy(np.ascontiguousarray(enc_proj, dtype=np.float32), np.asarray(lengths, dtype=np.int64),
                         h["embed"], h["w_ih"], h["w_hh"], h["bias"], h["pred_w"], h["pred_b"], h["out_w"],
                          h["out_b"], self.durations, self.cfg.blank_id, max_symbols or self.cfg.max_symbols)

    # ---- devices: batched torch loop ------------------------------------------------------------
    def _weights(self, device, dtype):
        if self._device is None or self._device[0] != (device, dtype):
            w = {k: torch.from_numpy(v).to(device=device, dtype=dtype) for k, v in self.host.items()}
            w["durations"] = torch.from_numpy(self.durations).to(device)
            self._device = ((device, dtype), w)
        return self._device[1]

    @staticmethod
    def _predict(w, tokens, h, c):
        """One LSTM step for every row: tokens (B,), h/c (L, B, P) -> pred projection (B, J), h', c'."""
        x = F.embedding(tokens, w["embed"])
        hs, cs = [], []
        for i in range(h.shape[0]):
            gates = F.linear(x, w["w_ih"][i]) + F.linear(h[i], w["w_hh"][i]) + w["bias"][i]
            gi, gf, gg, go = gates.chunk(4, dim=-1)
            ci = torch.sigmoid(gf) * c[i] + torch.sigmoid(gi) * torch.tanh(gg)
            x = torch.sigmoid(go) * torch.tanh(ci)
            hs.append(x)
            cs.append(ci)
        return F.linear(x, w["pred_w"], w["pred_b"]), torch.stack(hs), torch.stack(cs)

    def greedy_device(self, enc_proj: torch.Tensor, lengths, max_symbols: int | None = None) -> list[TdtHyp]:
        """enc_proj (B, T, J) tensor on any device, lengths (B,) -> one TdtHyp per item."""
        max_symbols = max_symbols or self.cfg.max_symbols
        batch, n_frames, _ = enc_proj.shape
        if batch == 0 or n_frames == 0:
            return [_empty() for _ in range(batch)]
        w = self._weights(enc_proj.device, enc_proj.dtype)
        dev, classes = enc_proj.device, self.cfg.vocab_size + 1
        rows = torch.arange(batch, device=dev)
        lens = torch.as_tensor(np.asarray(lengths), dtype=torch.int64, device=dev)
        p = w["embed"].shape[1]
        h = enc_proj.new_zeros(self.cfg.pred_rnn_layers, batch, p)
        g, h, c = self._predict(w, torch.full((batch,), self.cfg.blank_id, device=dev), h, torch.zeros_like(h))
        t, run = torch.zeros(batch, dtype=torch.int64, device=dev), torch.zeros(batch, dtype=torch.int64, device=dev)
        active, steps = t < lens, []
        while len(steps) % _SYNC_EVERY or bool(active.any()):
            logits = F.linear(F.relu(enc_proj[rows, t.clamp(max=n_frames - 1)] + g), w["out_w"], w["out_b"])
            scores = logits[:, :classes].float()
            k = scores.argmax(-1)
            d = w["durations"][logits[:, classes:].argmax(-1)]
            conf = torch.softmax(scores, -1).gather(1, k[:, None])[:, 0]
            emit, blank = active & (k != self.cfg.blank_id), active & (k == self.cfg.blank_id)
            steps.append((k, t, d, conf, emit))
            run = torch.where(emit & (d == 0), run + 1, 0)
            force = run >= max_symbols
            t = t + torch.where(blank, d.clamp(min=1), torch.where(emit, torch.where(d > 0, d, force.long()), 0))
            run = torch.where(force, 0, run)
            g2, h2, c2 = self._predict(w, k, h, c)
            g = torch.where(emit[:, None], g2, g)
            h, c = torch.where(emit[None, :, None], h2, h), torch.where(emit[None, :, None], c2, c)
            active = t < lens
        return _split_steps(steps, batch)


def _empty() -> TdtHyp:
    z = np.zeros(0, np.int32)
    return TdtHyp(z, z, z, np.zeros(0, np.float32))


def _split_steps(steps, batch: int) -> list[TdtHyp]:
    """Per-step (B,) records -> per-item arrays of the emitting steps (one host transfer)."""
    k, t, d, conf, emit = (torch.stack(x, dim=1).cpu().numpy() for x in zip(*steps, strict=True))
    out = []
    for b in range(batch):
        m = emit[b]
        out.append(TdtHyp(k[b, m].astype(np.int32), t[b, m].astype(np.int32), d[b, m].astype(np.int32),
                          conf[b, m].astype(np.float32)))
    return out
