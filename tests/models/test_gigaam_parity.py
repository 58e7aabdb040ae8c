"""GigaAM on the torch backend vs the `gigaam` reference code, random weights.

Two shapes: v2 as the PyPI package builds it (conv2d stem, BatchNorm conv module, centred
400-sample STFT), and v3 (conv1d stem, LayerNorm conv module, 320-sample STFT without
centring) with the modules v3 changed written from the repository's code (gigaam_refs.py).
Each reference is saved as a released-layout `.ckpt` (`{"cfg": DictConfig, "state_dict"}`),
read by `checkpoint.read_gigaam_checkpoint` and loaded through `weights.map_weights`.

Test-only packages: gigaam==0.1.0 (--no-deps), hydra-core, omegaconf, sentencepiece, and
torchaudio (--no-deps, with its compiled libraries removed: PyPI's torchaudio is built for
another torch, and MelSpectrogram is plain torch code that does not need them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_close, encoder_arithmetic, log_mel_tolerance

try:
    import gigaam_refs
except (ImportError, OSError) as e:  # OSError: torchaudio whose compiled libraries do not fit this torch
    pytest.skip(
        f"the GigaAM reference cannot be imported ({type(e).__name__}: {e}); install gigaam==0.1.0 "
        "--no-deps, hydra-core, omegaconf, and torchaudio --no-deps without its lib/*.so",
        allow_module_level=True,
    )

from polyasr.backends.torch import TorchBackend  # noqa: E402
from polyasr.errors import WeightsMismatchError  # noqa: E402
from polyasr.kernels.mel import log_mel_ref  # noqa: E402
from polyasr.models.gigaam import model as net  # noqa: E402
from polyasr.models.gigaam.checkpoint import read_gigaam_checkpoint  # noqa: E402
from polyasr.models.gigaam.config import GigaAMConfig  # noqa: E402
from polyasr.models.gigaam.pipeline import GigaAMModel  # noqa: E402
from polyasr.models.gigaam.tokenizer import Vocabulary  # noqa: E402
from polyasr.models.gigaam.weights import map_weights  # noqa: E402
from polyasr.options import TranscribeOptions  # noqa: E402

CONFIGS = {"v2": gigaam_refs.v2_config, "v3": gigaam_refs.v3_config}
SR = 16000


def _audio(seconds: float, seed: int) -> np.ndarray:
    """Noise with a slow envelope (some frames loud, some quiet), float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    env = 0.05 + 0.5 * np.abs(np.sin(np.linspace(0, 7 * seconds, n)))
    return (rng.standard_normal(n) * env * 0.3).astype(np.float32)


def _save_ckpt(ref, cfg: dict, path, bf16_buffers: bool = False):
    from omegaconf import OmegaConf

    sd = dict(ref.state_dict())
    if bf16_buffers:  # as v3 ships them: window and mel bank rounded to bf16, and used so by the reference
        for name in ("preprocessor.featurizer.0.spectrogram.window", "preprocessor.featurizer.0.mel_scale.fb"):
            rounded = sd[name].to(torch.bfloat16)
            sd[name].copy_(rounded.float())
            sd[name] = rounded
    torch.save({"cfg": OmegaConf.create(cfg), "state_dict": sd}, path)
    return path


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(reference GigaAMASR, our GigaAMModel, cfg dict) on the same random weights."""
    cfg = CONFIGS[request.param]()
    ref = gigaam_refs.build_reference(cfg)
    path = _save_ckpt(
        ref,
        cfg,
        tmp_path_factory.mktemp(request.param) / f"{request.param}_ctc.ckpt",
        bf16_buffers=request.param == "v3",
    )
    ours = GigaAMModel("gigaam-test", read_gigaam_checkpoint(path), TorchBackend("cpu", "float32"))
    return ref, ours, cfg


def _ref_forward(ref, audio: np.ndarray):
    wav = torch.from_numpy(audio)[None]
    feats, flen = ref.preprocessor(wav, torch.tensor([len(audio)]))
    enc, elen = ref.encoder(feats, flen)
    return feats, flen, enc, elen


def test_config_from_released_dict(pair):
    _, ours, cfg = pair
    c, enc = ours.cfg, cfg["encoder"]
    assert (c.n_layers, c.d_model, c.n_heads, c.conv_kernel_size, c.num_classes) == (
        enc["n_layers"],
        enc["d_model"],
        enc["n_heads"],
        enc["conv_kernel_size"],
        cfg["head"]["num_classes"],
    )
    v3 = enc.get("subsampling") == "conv1d"
    assert (c.subsampling, c.conv_norm_type, c.n_fft, c.center) == (
        ("conv1d", "layer_norm", 320, False) if v3 else ("conv2d", "batch_norm", 400, True)
    )
    assert c.blank_id == 33 and c.frame_secs == pytest.approx(0.04)


@torch.inference_mode()
def test_frontend_matches_reference(pair):
    """Our MelConfig (and the checkpoint's bf16 buffers for v3) vs the reference preprocessor."""
    ref, ours, _ = pair
    audio = _audio(1.37, seed=1)
    expected, flen, _, _ = _ref_forward(ref, audio)
    feats, frames = ours.features([audio])
    assert frames.tolist() == flen.tolist()
    tol = log_mel_tolerance(audio, ours.cfg.mel_config())
    assert_close(feats, expected, tol, what="log-mel features")
    if ours.buffers is None:  # v2 here: the computed bank/window are the frontend itself
        plain, _ = log_mel_ref(torch.from_numpy(audio), ours.cfg.mel_config())
        assert_close(plain, expected, tol, what="MelConfig log-mel")


@torch.inference_mode()
def test_mel_config_alone_matches_torchaudio():
    """The MelConfig of both versions vs torchaudio's MelSpectrogram + ln(clamp) with fp32 buffers."""
    audio = torch.from_numpy(_audio(0.91, seed=2))
    for cfg in (GigaAMConfig(), GigaAMConfig.tiny()):
        mc = cfg.mel_config()
        ta = gigaam_refs.V3FeatureExtractor(n_fft=mc.n_fft, win_length=mc.win_length)
        ta.featurizer[0] = gigaam_refs.torchaudio.transforms.MelSpectrogram(
            sample_rate=SR,
            n_mels=mc.n_mels,
            win_length=mc.win_length,
            hop_length=mc.hop_length,
            n_fft=mc.n_fft,
            center=mc.center,
        )
        feats, _ = log_mel_ref(audio, mc)
        tol = log_mel_tolerance(audio, mc)
        assert_close(feats, ta.featurizer(audio[None]), tol, what=f"features n_fft={mc.n_fft}")


@torch.inference_mode()
def test_encoder_and_log_probs_match(pair):
    ref, ours, _ = pair
    audio = _audio(2.3, seed=3)
    feats, flen, enc, elen = _ref_forward(ref, audio)
    x, lengths = net.encode(ours.params, ours.cfg, ours.B, feats, flen.numpy())
    assert lengths.tolist() == elen.tolist()
    kw = encoder_arithmetic(ours.cfg)
    assert_close(x, enc.transpose(1, 2), **kw, what="encoder output")
    assert_close(net.log_probs(ours.params, ours.B, x), ref.head(enc), **kw, what="log-probs")


@torch.inference_mode()
def test_greedy_text_matches(pair):
    ref, ours, _ = pair
    for seed, secs in ((4, 1.9), (5, 3.1)):
        audio = _audio(secs, seed)
        _, _, enc, elen = _ref_forward(ref, audio)
        expected = ref.decoding.decode(ref.head, enc, elen)[0]
        out = ours.recognize(audio, TranscribeOptions())
        assert ours.vocab.decode(out.tokens) == expected
        assert len(expected) > 5  # random weights still emit text: the comparison is not vacuous


@torch.inference_mode()
def test_padded_batch_equals_one_by_one(pair):
    """A batch of different lengths: valid frames equal each item alone (ours), and the reference.
    `frames` is the padded forward pass `transcribe` runs on every batch of chunks."""
    ref, ours, _ = pair
    audios = [_audio(s, seed) for seed, s in ((6, 2.2), (7, 0.83), (8, 1.57))]
    feats, frames = ours.features(audios)
    batched, lengths = net.encode(ours.params, ours.cfg, ours.B, feats, frames)
    ids, conf, valid = ours.frames(audios)
    assert valid.tolist() == lengths.tolist()
    for i, audio in enumerate(audios):
        f1, n1 = ours.features([audio])
        assert int(n1[0]) == int(frames[i])
        tol = log_mel_tolerance(audio, ours.cfg.mel_config())
        assert_close(feats[i : i + 1, :, : n1[0]], f1, tol, what=f"item {i} features")
        alone, n_alone = net.encode(ours.params, ours.cfg, ours.B, f1, n1)
        assert int(n_alone[0]) == int(lengths[i])
        kw = encoder_arithmetic(ours.cfg)
        assert_close(batched[i : i + 1, : lengths[i]], alone, **kw, what=f"item {i} batched vs alone")
        _, _, enc, elen = _ref_forward(ref, audio)
        assert_close(alone, enc.transpose(1, 2), **kw, what=f"item {i} vs reference")
        single_ids, single_conf, _ = ours.frames([audio])
        assert ids[i, : valid[i]].tolist() == single_ids[0].tolist()
        assert_close(conf[i, : valid[i]], single_conf[0], magnitude=1.0, **kw, what=f"item {i} frame confidence")
        single = ours.recognize(audio, TranscribeOptions())
        assert ours.vocab.decode(single.tokens) == ref.decoding.decode(ref.head, enc, elen)[0]


@torch.inference_mode()
def test_reference_batch_agrees_for_v3(pair):
    """The repo's v3 code masks its stem, so the reference itself is batch-invariant: compare batches."""
    ref, ours, cfg = pair
    if cfg["encoder"].get("subsampling") != "conv1d":
        pytest.skip("gigaam 0.1.0's conv2d stem does not mask padding (fixed upstream for v3 by #75)")
    audios = [_audio(s, seed) for seed, s in ((9, 1.1), (10, 2.05))]
    n = max(len(a) for a in audios)
    wav = torch.from_numpy(np.stack([np.pad(a, (0, n - len(a))) for a in audios]))
    feats, flen = ref.preprocessor(wav, torch.tensor([len(a) for a in audios]))
    enc, elen = ref.encoder(feats, flen)
    ours_feats, frames = ours.features(audios)
    x, lengths = net.encode(ours.params, ours.cfg, ours.B, ours_feats, frames)
    assert lengths.tolist() == elen.tolist()
    for i in range(len(audios)):
        assert_close(x[i, : lengths[i]], enc[i, :, : lengths[i]].T, **encoder_arithmetic(ours.cfg), what=f"item {i}")


def test_transcribe_returns_word_segments(pair):
    _, ours, _ = pair
    audio = _audio(2.6, seed=11)
    result = ours.transcribe(audio, TranscribeOptions())
    segments, language, info, timings = result.segments, result.language, result.info(), result.timings
    out = ours.recognize(audio, TranscribeOptions())
    assert language == "ru" and set(timings) >= {"features", "encoder", "decoder"}
    assert info["encoder_frames"] == out.confidence.size
    words = " ".join(ours.vocab.decode(out.tokens).split())
    assert "".join(s.text for s in segments).strip() == words
    assert all(" " not in s.text.strip() for s in segments)
    assert all(0 <= s.start < s.end <= len(audio) / SR + 0.04 and 0 < s.confidence <= 1 for s in segments)
    assert [s.start for s in segments] == sorted(s.start for s in segments)


def test_segments_times_and_confidence():
    """Word grouping, frame -> time (40 ms), confidence = mean max posterior over the word's frames."""
    ours = GigaAMModel.__new__(GigaAMModel)
    ours.cfg = GigaAMConfig.tiny()
    ours.vocab = Vocabulary(ours.cfg)
    chars = ours.cfg.vocabulary
    text = "да нет"
    ids = np.array([chars.index(c) for c in text], np.int32)
    frames = np.array([2, 3, 5, 7, 8, 10], np.int32)
    conf = np.linspace(0.5, 1.0, 12).astype(np.float32)
    segs = ours.words(ids, frames, 1.0 + np.arange(conf.size) * 0.04, conf)
    assert [s.text for s in segs] == [" да", " нет"]
    assert [(s.start, s.end) for s in segs] == [(1.08, 1.16), (1.28, 1.44)]
    assert segs[0].confidence == pytest.approx(conf[2:4].mean())
    assert segs[1].confidence == pytest.approx(conf[7:11].mean())


def test_language_other_than_russian_is_refused(pair):
    from polyasr.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="Russian"):
        pair[1].transcribe(_audio(0.5, 0), TranscribeOptions(language="en"))


def test_missing_and_misshaped_tensors_are_named(pair):
    ref, ours, cfg = pair
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    tags = {k: "float32" for k in sd}
    del sd["encoder.layers.1.self_attn.linear_k.weight"]
    sd["head.decoder_layers.0.bias"] = np.zeros(35, np.float32)
    with pytest.raises(WeightsMismatchError, match=r"linear_k\.weight.*|head\.decoder_layers\.0\.bias"):
        map_weights(sd, tags, ours.cfg, "test")


@pytest.mark.slow
@torch.inference_mode()
def test_real_v3_dimensions_encoder():
    """16 layers x 768, 16 heads, random weights: the shapes of the released v3 load and match."""
    cfg = gigaam_refs.v3_config(n_layers=16, d_model=768, n_heads=16)
    ref = gigaam_refs.build_reference(cfg)
    gc = GigaAMConfig.from_dict(cfg)
    assert (gc.n_layers, gc.d_model, gc.n_heads, gc.ff_expansion_factor, gc.conv_kernel_size) == (16, 768, 16, 4, 5)
    sd = ref.state_dict()
    params, tags, buffers = map_weights(
        {k: v.numpy() for k, v in sd.items()}, {k: "float32" for k in sd}, gc, "v3-dims"
    )
    B = TorchBackend("cpu", "float32")
    prepared = net.prepare({k: B.param(v, tags.get(k)) for k, v in params.items()}, gc, B)
    feats, flen, enc, elen = _ref_forward(ref, _audio(1.2, seed=12))
    x, lengths = net.encode(prepared, gc, B, feats, flen.numpy())
    assert tuple(x.shape) == (1, int(elen[0]), 768) and lengths.tolist() == elen.tolist()
    assert_close(x, enc.transpose(1, 2), **encoder_arithmetic(gc), what="v3-size encoder output")


def _train_sentencepiece(path):
    """A small unigram SentencePiece model over Russian words with punctuation (like e2e's)."""
    import random

    import sentencepiece

    words = "привет мир как дела хорошо спасибо сегодня погода отличная завтра будет дождь мы идём домой".split()
    rng = random.Random(0)
    lines = [" ".join(rng.choice(words) for _ in range(8)) + rng.choice(".,?!") for _ in range(300)]
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(path.with_suffix("")),
        vocab_size=64,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return sentencepiece.SentencePieceProcessor(model_file=str(path))


@torch.inference_mode()
def test_e2e_sentencepiece_vocabulary(tmp_path):
    """v3 e2e layout: the head has SentencePiece size + 1 classes, the tokenizer sits beside the .ckpt."""
    sp = _train_sentencepiece(tmp_path / "v3_e2e_ctc_tokenizer.model")
    cfg = gigaam_refs.v3_config()
    cfg["model_name"] = "v3_e2e_ctc"
    cfg["head"]["num_classes"] = sp.get_piece_size() + 1
    cfg["decoding"] = {
        "_target_": "gigaam.decoding.CTCGreedyDecoding",
        "vocabulary": None,
        "model_path": str(tmp_path / "v3_e2e_ctc_tokenizer.model"),
    }
    ref = gigaam_refs.build_reference(cfg)
    path = _save_ckpt(ref, cfg, tmp_path / "v3_e2e_ctc.ckpt", bf16_buffers=True)
    ours = GigaAMModel("gigaam-e2e-test", read_gigaam_checkpoint(path), TorchBackend("cpu", "float32"))
    assert ours.cfg.blank_id == sp.get_piece_size()
    for seed in (13, 14):
        audio = _audio(2.4, seed)
        _, _, enc, elen = _ref_forward(ref, audio)
        expected = ref.decoding.decode(ref.head, enc, elen)[0]
        out = ours.recognize(audio, TranscribeOptions())
        assert ours.vocab.decode(out.tokens) == expected and expected.strip()
        segments = ours.transcribe(audio, TranscribeOptions()).segments
        pieces = [sp.id_to_piece(int(i)) for s in segments for i in s.tokens]
        assert pieces and all(sp.id_to_piece(s.tokens[0]).startswith("\u2581") for s in segments[1:])
        assert " ".join(s.text.strip() for s in segments) == " ".join(expected.split())


def test_e2e_without_its_tokenizer_is_a_clear_error(tmp_path):
    from polyasr.errors import CheckpointError

    cfg = GigaAMConfig.tiny(vocabulary=(), model_path="v3_e2e_ctc_tokenizer.model", num_classes=257)
    with pytest.raises(CheckpointError, match="tokenizer.model"):
        Vocabulary(cfg, None)


def test_head_feat_in_does_not_override_mel_bins():
    cfg = GigaAMConfig.from_dict(gigaam_refs.v3_config(d_model=128, n_heads=4))
    assert (cfg.feat_in, cfg.features, cfg.d_model) == (64, 64, 128)
    assert net.param_shapes(cfg)["encoder.pre_encode.conv.0.weight"] == (128, 64, 5)


@torch.inference_mode()
def test_too_short_items_give_nothing_and_do_not_disturb_the_batch(pair):
    _, ours, _ = pair
    audio = _audio(1.3, seed=15)
    short = np.full(ours.min_samples - 1, 0.1, np.float32)
    ids, conf, valid = ours.frames([short, audio, short[:0]])
    assert valid[0] == valid[2] == 0
    alone_ids, alone_conf, alone_valid = ours.frames([audio])
    assert valid[1] == alone_valid[0] and ids[1, : valid[1]].tolist() == alone_ids[0].tolist()
    kw = encoder_arithmetic(ours.cfg)
    assert_close(conf[1, : valid[1]], alone_conf[0], magnitude=1.0, **kw, what="frame confidence")
    assert ours.transcribe(short, TranscribeOptions()).segments == []
