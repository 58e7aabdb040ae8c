"""Qwen3-ASR prompt construction against transformers' processor, the answer parser, Qwen's text
repetition fix, and the decoder's repetition guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qwen3_asr_refs import make_tokenizer, official_prompt, reference_processor, save_checkpoint, small_config

from polyasr.errors import InvalidOptionError
from polyasr.models.qwen3_asr import decode
from polyasr.models.qwen3_asr.config import Qwen3ASRConfig
from polyasr.models.qwen3_asr.model import audio_tokens
from polyasr.models.qwen3_asr.prompt import (
    DEFAULT_PROMPT,
    PromptBuilder,
    fix_repetitions,
    language_name,
    load_chat_template,
    parse_answer,
)
from polyasr.models.qwen3_asr.tokenizer import Qwen3Tokenizer

pytest.importorskip("transformers.models.qwen3_asr")


class _NoWeights:
    def state_dict(self):
        return {}


@pytest.fixture(scope="module")
def tok_dirs(tmp_path_factory):
    """The tokenizer in both layouts' files: vocab.json + merges.txt (Qwen's) and tokenizer.json."""
    tok = make_tokenizer()
    root = tmp_path_factory.mktemp("qwen3tok")
    cfg = small_config(tok)
    dirs = {
        layout: save_checkpoint(_NoWeights(), cfg, tok, root / layout, layout, shards=1)
        for layout in ("qwen", "transformers")
    }
    return tok, dirs


@pytest.mark.parametrize("layout", ["qwen", "transformers"])
@pytest.mark.parametrize("language", [None, "ru", "en", "zh"])
def test_prompt_ids_equal_the_reference_processor(tok_dirs, layout, language):
    tok, dirs = tok_dirs
    ours = Qwen3Tokenizer(dirs[layout])
    builder = PromptBuilder(ours, load_chat_template(dirs[layout]))
    proc = reference_processor(tok)
    name, cfg = language_name(language), Qwen3ASRConfig.from_dict(small_config(tok))
    for seconds in (0.7, 3.0, 12.34):
        audio = np.zeros(int(seconds * 16000), np.float32)
        inp = proc(text=official_prompt(proc, name), audio=[audio], return_tensors="pt")
        # the processor counts placeholders from its own frame mask: the same count ours gives
        assert builder.ids(audio_tokens(len(audio) // 160, cfg), name) == inp["input_ids"][0].tolist()


def test_context_goes_into_the_system_turn_as_qwen_puts_it(tok_dirs):
    tok, dirs = tok_dirs
    builder = PromptBuilder(Qwen3Tokenizer(dirs["qwen"]), load_chat_template(dirs["qwen"]))
    proc = reference_processor(tok)
    text = official_prompt(proc, "English", context="Hotwords: quick fox, lazy dog")
    inp = proc(text=text, audio=[np.zeros(32000, np.float32)], return_tensors="pt")
    assert builder.ids(26, "English", "Hotwords: quick fox, lazy dog") == inp["input_ids"][0].tolist()
    assert builder.ids(26, "English") != inp["input_ids"][0].tolist()


def test_forced_language_changes_the_prompt_as_qwen_does(tok_dirs):
    _, dirs = tok_dirs
    ours = Qwen3Tokenizer(dirs["qwen"])
    builder = PromptBuilder(ours, load_chat_template(dirs["qwen"]))
    free, forced = builder.ids(5), builder.ids(5, language_name("ru"))
    assert forced[: len(free)] == free
    assert ours.tok.decode(forced[len(free) :], skip_special_tokens=False) == "language Russian<asr_text>"
    assert builder.text == DEFAULT_PROMPT  # the template renders the request exactly as Qwen's prompt
    assert PromptBuilder(ours, None).ids(5, "Russian") == forced


def test_transformers_transcription_request_lacks_the_empty_system_turn(tok_dirs):
    """README: transformers' apply_transcription_request renders no system turn without a prompt;
    Qwen's package always renders one (empty), and polyasr follows Qwen's."""
    tok, _ = tok_dirs
    proc = reference_processor(tok)
    hf = proc.apply_transcription_request(np.zeros(16000, np.float32), language="ru", tokenize=False)[0]
    official = official_prompt(proc, "Russian")
    assert official == "<|im_start|>system\n<|im_end|>\n" + hf


def test_unknown_or_unsupported_language_is_an_actionable_error():
    assert language_name("RU") == language_name("russian") == "Russian"
    with pytest.raises(InvalidOptionError, match=r"'xx'.*ru \(Russian\).*leave --language out"):
        language_name("xx")
    with pytest.raises(InvalidOptionError, match="'fr'"):
        language_name("fr", supported=("English", "Russian"))


def test_vocab_merges_tokenizer_equals_tokenizer_json(tok_dirs):
    _, dirs = tok_dirs
    a, b = Qwen3Tokenizer(dirs["qwen"]), Qwen3Tokenizer(dirs["transformers"])
    for text in ["language English<asr_text>Hello, world! 12345", "Привет,  мир\n\n", "it's  the fox's"]:
        assert a.encode(text) == b.encode(text)
    assert a.stop_ids == b.stop_ids == {a.id("<|im_end|>"), a.id("<|endoftext|>")}


def test_answers_are_parsed_as_qwen_parses_them(tok_dirs):
    _, dirs = tok_dirs
    t = Qwen3Tokenizer(dirs["qwen"])
    assert parse_answer(t, t.encode("language English<asr_text> the quick fox"), None) == ("English", "the quick fox")
    assert parse_answer(t, t.encode("language None<asr_text>"), None) == ("", "")
    assert parse_answer(t, t.encode("language None<asr_text>hello"), None) == ("", "hello")
    assert parse_answer(t, t.encode("language russian<asr_text>Привет"), None) == ("Russian", "Привет")
    assert parse_answer(t, t.encode("hello world"), None) == ("", "hello world")
    assert parse_answer(t, t.encode("hello world"), "Russian") == ("Russian", "hello world")


def test_text_repetition_fix_equals_qwens():
    from transformers.models.qwen3_asr.processing_qwen3_asr import _detect_and_fix_repetitions

    rs = np.random.RandomState(0)
    cases = ["a" * 25 + "b", "ha" * 30 + " end", "x" + "abc " * 25, "no loop here", "ab" * 19] + [
        "".join(rs.choice(list("ab "), size=rs.randint(10, 120))) for _ in range(50)
    ]
    for s in cases:
        assert fix_repetitions(s) == _detect_and_fix_repetitions(s), s


def _letters(ids):
    """A stand-in detokenizer: one letter per id."""
    return "".join(chr(ord("a") + i % 26) for i in ids)


def test_loop_guard_stops_only_where_qwens_fix_up_collapses():
    n = decode.COLLAPSE_REPEATS
    assert decode.loop_start([1, 2, 3] + [7] * (n - 1), _letters) is None
    assert decode.loop_start([1, 2, 3] + [7] * n, _letters) == 4
    phrase = [5, 6, 7, 8, 9, 10]
    assert decode.loop_start([1, 2] + phrase * (n - 1), _letters) is None
    assert decode.loop_start([1, 2] + phrase * n, _letters) == 2 + len(phrase)
    assert decode.loop_start([1, 2, 1, 2, 3, 1, 2, 3], _letters) is None
    # a phrase whose text is longer than the fix-up's 20-character patterns is never collapsed by it
    assert decode.loop_start([1, 2] + phrase * n, lambda ids: _letters(ids) * 4) is None
    # the run is checked as text: ids that decode to something else as a whole are not a loop
    assert decode.loop_start([1] + [7] * n, lambda ids: _letters(ids[:1])) is None


def _rig_decoder(monkeypatch, scripts):
    """Replace the network with one whose greedy choice at step k of row r is scripts[r][k]."""
    from polyasr.models.qwen3_asr import model as net

    step = {"n": 0, "rows": list(range(len(scripts)))}

    def fake_decode(params, cfg, B, x, cache):
        cache.length += x.shape[1]
        return torch.zeros(x.shape[0], x.shape[1], 4)

    def fake_logits(params, B, hidden):
        out = torch.full((hidden.shape[0], 1, max(max(s) for s in scripts) + 1), -10.0)
        for j, row in enumerate(step["rows"][: hidden.shape[0]]):
            out[j, 0, scripts[row][step["n"]]] = 10.0
        step["n"] += 1
        return out

    def fake_keep(cache, B, rows):
        step["rows"] = [step["rows"][r] for r in rows]

    monkeypatch.setattr(net, "decode", fake_decode)
    monkeypatch.setattr(net, "logits", fake_logits)
    monkeypatch.setattr(net, "keep_rows", fake_keep)
    monkeypatch.setattr(net, "new_cache", lambda cfg, B, pad, n: net.KVCache([], [], pad, None, None, None))
    monkeypatch.setattr(net, "embed", lambda params, B, ids: torch.zeros(ids.shape[0], 1, 4))


def test_a_repeated_phrase_that_ends_is_decoded_on_as_qwens_pipeline_does(tok_dirs, monkeypatch):
    """Real speech repeats ("no, no, no, ..."): a run that ends, followed by more text, must give the
    text Qwen's pipeline gives (decode on, then its text fix-up), not be cut after a few repeats. A run
    long enough for the fix-up to collapse stops early and still gives Qwen's text when the loop would
    have gone on to the token limit."""
    from transformers.models.qwen3_asr.processing_qwen3_asr import _detect_and_fix_repetitions

    from polyasr.backends.torch import TorchBackend

    _, dirs = tok_dirs
    t = Qwen3Tokenizer(dirs["qwen"])
    head, no, tail = t.encode("language English<asr_text>and he said"), t.encode(" no,"), t.encode(" and left.")
    spoken = head + no * 12 + tail  # 12 repeats: below the fix-up's 20, so Qwen writes them all
    looping = head + no * 60  # runs on past the token limit
    stop = max(t.stop_ids)
    _rig_decoder(monkeypatch, [spoken + [stop], looping])
    gens = decode.greedy(
        {}, None, TorchBackend("cpu"), torch.zeros(2, 3, 4), np.zeros(2, np.int64), [120, 120], {stop}, guard=t.decode
    )
    assert gens[0].stopped == "stop" and gens[0].tokens == spoken
    assert gens[1].stopped == "repetition" and len(gens[1].tokens) < 120
    for g, full in zip(gens, (spoken, looping[:120])):
        ours = parse_answer(t, g.tokens, None)[1]
        qwen = _detect_and_fix_repetitions(t.decode(full)).split("<asr_text>", 1)[1].strip()
        assert ours == qwen


def test_greedy_stops_a_looping_row_and_not_the_others(monkeypatch):
    """Rigged logits: row 0 loops on a 3-token phrase after a 2-token preamble, row 1 says 4 tokens and
    stops; row 0 must keep preamble + one phrase and be marked, row 1 must be untouched."""
    from polyasr.backends.torch import TorchBackend

    _rig_decoder(monkeypatch, [[50, 51] + [60, 61, 62] * 40, [70, 71, 72, 73, 99]])
    gens = decode.greedy(
        {},
        None,
        TorchBackend("cpu"),
        torch.zeros(2, 3, 4),
        np.zeros(2, np.int64),
        [200, 200],
        frozenset({99}),
        guard=_letters,
    )
    assert gens[0].tokens == [50, 51, 60, 61, 62] and gens[0].stopped == "repetition"
    assert gens[1].tokens == [70, 71, 72, 73] and gens[1].stopped == "stop"
    assert len(gens[0].logprobs) == 5


def test_max_new_tokens_grows_with_audio_length():
    assert decode.max_new_tokens(1.0) < decode.max_new_tokens(30.0) == 32 + 375
