"""The benches' process: what bench/conftest.py sets up and counts.

CTranslate2 keeps its own OpenMP runtime.

faster-whisper's engine and torch each ship a libgomp. Bound to torch's, CTranslate2's threads make
torch's stop spinning between parallel regions and polyasr's decoder steps slow down beside it, so a
side-by-side bench would measure that, not polyasr. The dynamic linker's own record of which library
each symbol was bound to (LD_DEBUG=bindings) is the evidence: the order bench/conftest.py imports in
must bind CTranslate2's `GOMP_parallel` to its own libgomp, and torch-first (the order it prevents)
must not, so the check can tell the two apart.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import util
from pathlib import Path

import pytest
from conftest import skip_missing

BENCH = Path(__file__).parent.parent / "bench"


def _gomp_binding(code: str) -> str:
    """The library CTranslate2's GOMP_parallel was bound to when `code` ran in a fresh interpreter."""
    env = {**os.environ, "LD_DEBUG": "bindings", "PYTHONPATH": str(BENCH)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    hits = re.findall(
        r"binding file \S*libctranslate2\S* \[0\] to (\S+) \[0\]: normal symbol `GOMP_parallel'", out.stderr
    )
    assert hits, "the dynamic linker reported no binding of CTranslate2's GOMP_parallel"
    return hits[0]


def test_ctranslate2_keeps_its_own_openmp_runtime():
    if util.find_spec("ctranslate2") is None:
        skip_missing("ctranslate2 (faster-whisper)")
    if sys.platform != "linux":
        pytest.skip("LD_DEBUG is glibc's dynamic linker")
    torch_gomp = re.compile(r"/torch/lib/libgomp[^/]*$")
    as_benches_do = _gomp_binding("import conftest, torch")
    assert "/ctranslate2.libs/" in as_benches_do and not torch_gomp.search(as_benches_do)
    assert torch_gomp.search(_gomp_binding("import torch, ctranslate2"))


def test_flop_count_sees_every_cpu_product_layout():
    """`count_flops` is what the benches' share of the fp32 matmul rate is computed from: a product
    it does not recognise (a packed weight's op) counts zero and the share falls silently. Every
    weight layout `prepare_linear` makes on the CPU is counted as its 2 x rows x Cin x Cout."""
    code = """
import torch, conftest
from polyasr.backends.torch import TorchBackend
B = TorchBackend("cpu", "float32")
w, x = torch.randn(48, 32), torch.randn(5, 7, 32)
for many_rows in (False, True, 64, 4096):
    prepared = B.prepare_linear(w, many_rows=many_rows)
    flops, _ = conftest.count_flops(lambda: B.linear(x, prepared, torch.randn(48)))
    print(many_rows, type(prepared).__name__, flops)
"""
    env = {**os.environ, "PYTHONPATH": str(BENCH)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    counts = [line.split() for line in out.stdout.splitlines()]
    assert len(counts) == 4 and all(int(flops) == 2 * 35 * 32 * 48 for *_, flops in counts), counts
