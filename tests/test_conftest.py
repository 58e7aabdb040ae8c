"""The suite's own machinery (tests/conftest.py): under CI a skip for a missing dependency fails,
other skips stay skips; the closeness helper's tolerance arithmetic and its report."""

from __future__ import annotations

from pathlib import Path

import pytest

_TESTS = """
import pytest
from conftest import skip_missing

def test_reference_missing():
    pytest.importorskip("polyasr_no_such_reference_module")

def test_weights_missing():
    skip_missing("whisper-base weights")

def test_no_gpu():
    pytest.skip("needs a CUDA GPU")

@pytest.mark.skipif(True, reason="the Triton interpreter has no bfloat16")
def test_marked():
    pass

def test_runs():
    assert True
"""
_MODULE_LEVEL = """
import pytest
pytest.importorskip("polyasr_no_such_reference_module")

def test_never_collected():
    pass
"""


@pytest.mark.parametrize("ci", [None, "true"])
def test_missing_dependencies_fail_under_ci(pytester, monkeypatch, ci):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_skips=_TESTS, test_module_skip=_MODULE_LEVEL)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result = pytester.runpytest_subprocess("-rfs", "-p", "no:cacheprovider", "--continue-on-collection-errors")
    if ci == "true":
        result.assert_outcomes(passed=1, skipped=2, failed=2, errors=1)
        result.stdout.fnmatch_lines(["*CI is set, so a missing dependency fails*polyasr_no_such_reference_module*"])
        result.stdout.fnmatch_lines(["*CI is set, so a missing dependency fails*whisper-base weights*"])
    else:
        result.assert_outcomes(passed=1, skipped=5)
