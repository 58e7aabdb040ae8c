"""polyasr._decode.top_k (beam search's per-row selection) against a stable argsort."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from polyasr import _decode


def _reference(x: np.ndarray, k: int):
    index = np.argsort(-x, axis=1, kind="stable")[:, :k]  # best first, equal scores in index order
    return index, np.take_along_axis(x, index, axis=1)


def _check(x: np.ndarray, k: int):
    index, value = _decode.top_k(x, k)
    want_index, want_value = _reference(x, k)
    assert index.dtype == np.int64 and value.dtype == np.float32 and index.shape == value.shape == (len(x), k)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_array_equal(value, want_value)


# few distinct values, -inf among them: ties everywhere
_SCORES = st.sampled_from([-np.inf, -2.5, -1.0, 0.0, 0.5, 3.0, np.float32(1e30)])


@settings(max_examples=300, deadline=None)
@given(data=st.data(), rows=st.integers(1, 4), n=st.integers(1, 40))
def test_matches_a_stable_argsort_whatever_the_ties(data, rows, n):
    x = data.draw(arrays(np.float32, (rows, n), elements=_SCORES))
    _check(x, data.draw(st.integers(1, n)))


@pytest.mark.parametrize("k", [1, 6, 11])
def test_whisper_sized_rows_with_the_text_suppressed(k):
    """Rows of Whisper's vocabulary where the rules left only timestamps (or nothing) finite."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 51865)).astype(np.float32) * 4
    x[1, :50364] = -np.inf  # only timestamps left
    x[2, :] = -np.inf  # nothing left: the lowest indices, in order
    x[3, 100:] = -np.inf  # fewer finite than... exactly 100
    x[4, :] = np.round(x[4])  # integer-valued: many ties among the best
    x[5, :51860] = -np.inf  # fewer finite scores than k for k = 6, 11
    _check(x, k)


@pytest.mark.parametrize(
    "x, k, error, message",
    [
        (np.zeros((2, 5), np.float32), 0, ValueError, r"k = 0 is outside \[1, 5\]"),
        (np.zeros((2, 5), np.float32), 6, ValueError, r"k = 6 is outside \[1, 5\]"),
        (np.zeros((2, 5), np.float64), 2, TypeError, "incompatible function arguments"),
        (np.zeros(5, np.float32), 2, TypeError, "incompatible function arguments"),
        (
            np.zeros((5, 2), np.float32).T,
            2,
            TypeError,
            "incompatible function arguments",
        ),  # not C-contiguous: never a silent copy
    ],
)
def test_bad_input_is_an_error(x, k, error, message):
    with pytest.raises(error, match=message):
        _decode.top_k(x, k)
