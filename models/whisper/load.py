"""Whisper as the engine sees it: load a checkpoint onto a backend, transcribe samples."""

from __future__ import annotations

from polyasr.errors import CheckpointError
from polyasr.models.whisper import model as net
from polyasr.models.whisper import transcribe as long_form
from polyasr.models.whisper.tokenizer import WhisperTokenizer
from polyasr.models.whisper.weights import load_checkpoint


class WhisperModel:
    sample_rate = 16000

    def __init__(self, name: str, ckpt, B):
        self.name, self.cfg, self.B, self.format = name, ckpt.cfg, B, ckpt.format
        self.tok = WhisperTokenizer(ckpt.tokenizer_file, multilingual=ckpt.cfg.is_multilingual)
        self.params = net.prepare({k: B.param(v, ckpt.dtypes.get(k)) for k, v in ckpt.params.items()}, B)

    def transcribe(self, audio, opts, progress=None):
        """audio (N,) float32 16 kHz -> (segments, language, info dict, timings dict)."""
        with self.B.no_grad():
            segments, language, log = long_form.transcribe(self, audio, opts, progress)
        info = {
            "windows": log.windows,
            "temperature_fallbacks": log.fallbacks,
            "windows_skipped_no_speech": log.skipped_no_speech,
            "windows_failed": log.failed,
            "checkpoint_format": self.format,
        }
        if log.language_probability is not None:
            info["language_probability"] = round(log.language_probability, 4)
        if log.first_token_secs is not None:
            info["first_token_latency_secs"] = round(log.first_token_secs, 4)
        return segments, language, info, dict(log.timings)


def load_model(spec, path, B) -> WhisperModel:
    ckpt = load_checkpoint(path)
    check_expected(spec, ckpt.cfg, path)
    return WhisperModel(spec.id, ckpt, B)


def check_expected(spec, cfg, path):
    """A checkpoint whose architecture contradicts the id (base weights for whisper-large-v3) is an error."""
    found = {
        "d_model": cfg.d_model,
        "encoder_layers": cfg.encoder_layers,
        "decoder_layers": cfg.decoder_layers,
        "num_mel_bins": cfg.num_mel_bins,
        "multilingual": cfg.is_multilingual,
    }
    wrong = [f"{k} {found[k]} (expected {v})" for k, v in spec.expect if found[k] != v]
    if wrong:
        raise CheckpointError(
            f"{path} is not a {spec.id} checkpoint: {', '.join(wrong)}; pass the matching "
            "--model id, or --model whisper for any Whisper-architecture checkpoint"
        )
