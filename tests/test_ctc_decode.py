"""polyasr._decode.ctc_greedy (through models/ctc_decode.py) against a pure-Python reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from polyasr import _decode
from polyasr.models.ctc_decode import ctc_greedy


def reference(ids, length, blank):
    """The definition: emit a label where it differs from the previous frame's and is not blank."""
    tokens, frames, prev = [], [], None
    for t in range(length):
        if ids[t] != prev and ids[t] != blank:
            tokens.append(int(ids[t]))
            frames.append(t)
        prev = ids[t]
    return tokens, frames


@st.composite
def id_batches(draw):
    batch, frames = draw(st.integers(1, 5)), draw(st.integers(0, 40))
    vocab = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.int32, np.int64]))
    ids = draw(arrays(dtype, (batch, frames), elements=st.integers(0, vocab - 1)))
    lengths = draw(st.lists(st.integers(0, frames), min_size=batch, max_size=batch))
    return ids, np.array(lengths, dtype=np.int64), draw(st.integers(0, vocab - 1))


@settings(max_examples=300, deadline=None)
@given(id_batches())
def test_ids_match_reference(case):
    ids, lengths, blank = case
    for (tokens, frames), row, n in zip(ctc_greedy(ids, lengths, blank), ids, lengths, strict=True):
        assert (tokens.tolist(), frames.tolist()) == reference(row.tolist(), int(n), blank)
        assert tokens.dtype == np.int32 and frames.dtype == np.int32


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4), st.integers(0, 30), st.integers(1, 9), st.data())
def test_scores_equal_ids_of_their_argmax(batch, frames, vocab, data):
    scores = data.draw(arrays(np.float32, (batch, frames, vocab), elements=st.floats(-5, 5, width=32)))
    blank = data.draw(st.integers(0, vocab - 1))
    lengths = np.array(data.draw(st.lists(st.integers(0, frames), min_size=batch, max_size=batch)))
    got = ctc_greedy(scores, lengths, blank)
    want = ctc_greedy(scores.argmax(axis=-1).astype(np.int64), lengths, blank)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(got, want, strict=True))


def test_repeats_split_by_blank_are_two_tokens():
    ((tokens, frames),) = ctc_greedy(np.array([[0, 7, 7, 0, 7, 3, 3, 3, 0]]), blank=0)
    assert tokens.tolist() == [7, 7, 3] and frames.tolist() == [1, 4, 5]


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    ((tokens, _),) = ctc_greedy(torch.tensor([[2, 2, 1, 2]], dtype=torch.int64), blank=1)
    assert tokens.tolist() == [2, 2]


@pytest.mark.parametrize(
    "x, lengths, blank, message",
    [
        (np.zeros((2, 5), np.int64), [3, -1], 0, r"lengths\[1\] = -1"),
        (np.zeros((2, 5), np.int64), [3, 6], 0, r"lengths\[1\] = 6 is outside \[0, 5\]"),
        (np.zeros((2, 5), np.int64), [3], 0, "lengths has 1 entries for a batch of 2"),
        (np.zeros((1, 5, 4), np.float32), None, 4, r"blank 4 is outside the vocabulary \[0, 4\)"),
        (np.zeros((1, 5), np.float64), None, 0, "int32/int64 ids or .* float32 scores, got 2-D float64"),
        (np.zeros((1, 5, 3), np.float64), None, 0, "got 3-D float64"),
        (np.zeros(5, np.int64), None, 0, "got 1-D int64"),
        (np.zeros((1, 5), np.int64), [[5]], 0, "lengths must be a 1-D integer array"),
    ],
)
def test_bad_input_is_a_value_error(x, lengths, blank, message):
    with pytest.raises(ValueError, match=message):
        ctc_greedy(x, lengths, blank)


def test_extension_itself_rejects_what_the_wrapper_would():
    """The compiled function validates on its own too (it is public as polyasr._decode)."""
    with pytest.raises(ValueError, match="outside"):
        _decode.ctc_greedy(np.zeros((1, 3), np.int64), np.array([4], np.int64), 0)
    with pytest.raises(TypeError):
        _decode.ctc_greedy(np.zeros((1, 3), np.float64), np.array([3], np.int64), 0)


def test_token_spans_reach_the_last_frame_a_token_fires_on():
    from polyasr.models.ctc_decode import token_spans

    labels = np.array([0, 5, 5, 0, 5, 7, 7, 7, 0, 3])  # 5 twice (a blank between), then 7 over three frames
    posteriors = np.array([0.9, 0.6, 0.8, 0.9, 0.5, 0.3, 0.6, 0.9, 0.9, 0.4])
    ((tokens, frames),) = ctc_greedy(labels[None], blank=0)
    ends, probs = token_spans(labels, frames, posteriors)
    assert tokens.tolist() == [5, 5, 7, 3] and frames.tolist() == [1, 4, 5, 9]
    assert ends.tolist() == [2, 4, 7, 9]
    np.testing.assert_allclose(probs, [0.7, 0.5, 0.6, 0.4])
