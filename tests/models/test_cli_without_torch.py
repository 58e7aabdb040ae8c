"""The CLI on an install without torch (MLX only): every main path either works or says in one line
what is wrong. Anything else escaping `main` (a ModuleNotFoundError traceback) is a bug.

The commands run in one fresh interpreter in which importing torch fails as it does when torch is
not installed (ModuleNotFoundError); each command's exit code, stderr and any escaped traceback
come back as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

mx = pytest.importorskip("mlx.core")  # the backend such an install runs on

FIXTURES = Path(__file__).parent.parent / "fixtures"

_RUN_WITHOUT_TORCH = """
import contextlib, importlib.abc, io, json, sys, traceback

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTorch())
from polyasr.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    err, tb = io.StringIO(), None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        except BaseException:
            code, tb = None, traceback.format_exc()
    results.append({"argv": argv, "code": code, "stderr": err.getvalue(), "traceback": tb})
results.append({"torch imported": "torch" in sys.modules})
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def gigaam_ckpt(tmp_path_factory):
    pytest.importorskip("omegaconf")
    import torch
    from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

    torch.manual_seed(0)
    cfg = tiny_cfg(d_model=32)
    return save_ckpt(tmp_path_factory.mktemp("gigaam") / "v3_ctc.ckpt", cfg, v3_state_dict(cfg, bf16_window=True))


def test_cli_main_paths_without_torch(random_whisper_dir, gigaam_ckpt, tmp_path):
    short, converted = str(FIXTURES / "en_short.wav"), tmp_path / "gigaam-st"
    whisper = ["--model", "whisper", "--model-path", str(random_whisper_dir)]
    gigaam = ["--model", "gigaam-v3-ctc", "--model-path", str(converted)]
    bench = ["benchmark", "--audio", short, "--models", "gigaam-v3-ctc", "--model-path", f"gigaam-v3-ctc={converted}"]
    cases = [  # (argv, expected exit code, what the one error line must contain)
        (["models", "list"], 0, None),
        (["convert", "--model", "gigaam-v3-ctc", "--model-path", str(gigaam_ckpt), "-o", str(converted)], 0, None),
        (["transcribe", short, *gigaam, "--device", "mlx"], 0, None),
        (["transcribe", short, *gigaam], 0, None),  # --device auto finds MLX
        (["transcribe", short, *whisper, "--device", "mlx", "--language", "en", "--no-fallback"], 0, None),
        ([*bench, "--device", "mlx", "--repeats", "1"], 0, None),
        ([*bench, "--device", "mlx", "--threads", "2"], 2, "--threads"),
        (["transcribe", short, *gigaam, "--device", "cpu"], 5, "pip install torch"),
        (["transcribe", short, *gigaam, "--device", "mlx", "--quantize", "3"], 2, "quantize=3"),
        (["transcribe", str(tmp_path / "missing.wav"), *gigaam, "--device", "mlx"], 3, "missing.wav"),
        (["transcribe", short, "--model", "whisper-huge"], 4, "unknown model id"),
    ]
    run = subprocess.run(
        [sys.executable, "-c", _RUN_WITHOUT_TORCH, json.dumps([argv for argv, _, _ in cases])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    *results, tail = json.loads(run.stdout.strip().splitlines()[-1])
    assert tail == {"torch imported": False}
    for (argv, code, fragment), got in zip(cases, results):
        assert got["traceback"] is None, f"{argv}: escaped the CLI:\n{got['traceback']}"
        lines = got["stderr"].strip().splitlines()
        if code == 0:
            assert got["code"] == 0, (argv, got["stderr"])
            continue
        assert got["code"] == code and len(lines) == 1 and lines[0].startswith("polyasr: error: "), (argv, got)
        assert fragment in lines[0], (argv, lines[0])
