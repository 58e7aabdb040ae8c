"""`polyasr batch --ray`: the same job as a Ray Data pipeline.

  from_items(paths)                       the inputs, a few files per block
  .map(_decode_row)                       CPU tasks (DECODE_CPUS each): read, decode, resample (`work.decode`)
  .map_batches(_Transcriber, ...)         an actor pool, one engine loaded per actor (`concurrency`
                                          actors, `num_gpus` / `num_cpus` each), `work.transcribe_group`
  .iter_rows() on the driver              the write stage: each record goes through the same `Sink`
                                          as the local path, so atomicity and --resume are identical

Ray Data streams: blocks flow through the stages under its backpressure, so memory holds a few
blocks of decoded audio per stage, not the dataset. Audio crosses the object store as raw float32
bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import numpy as np

from polyasr import errors
from polyasr.batch.work import Decoded, decode, transcribe_group
from polyasr.errors import AsrError, BackendError
from polyasr.options import TranscribeOptions

FILES_PER_BLOCK = 4  # small blocks: decoding spreads over the CPUs and a block of long files stays small
# A decode task is libsndfile + soxr on one file. Asking for other resources than the model actors do
# also keeps Ray from fusing the two stages into the actors, where decoding would hold up the model.
DECODE_CPUS = 0.5
_POLYASR_ERROR = re.compile(r"polyasr\.errors\.(\w+): (.+)")


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise BackendError("--ray needs Ray Data: pip install 'polyasr[ray]'") from e
    return ray


def connect(address: str | None):
    """Join the cluster at `address` ("auto": the one this machine belongs to), or start a local one."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address or None, log_to_driver=True, include_dashboard=False if not address else None)
    return ray


def _decode_row(row: dict) -> dict:
    item = decode(row["path"])
    audio = b"" if item.audio is None else item.audio.tobytes()
    return {"path": item.path, "audio": audio, "error": item.error or ""}


class _Transcriber:
    """One actor of the model stage: loads the engine once, then transcribes the blocks it is given."""

    def __init__(self, engine_kwargs: dict, options: TranscribeOptions, fmt: str):
        from polyasr.engine import AsrEngine

        self.engine = AsrEngine.from_model(**engine_kwargs)
        self.options, self.fmt = options, fmt

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        items = [
            Decoded(str(path), error=str(error))
            if error
            else Decoded(str(path), audio=np.frombuffer(audio, np.float32).copy())  # writable, as torch wants
            for path, audio, error in zip(batch["path"], batch["audio"], batch["error"])
        ]
        out = transcribe_group(self.engine, items, self.options, self.fmt)
        return {"record": [json.dumps(r, ensure_ascii=False) for r, _ in out], "rendered": [t or "" for _, t in out]}


def run_ray(
    engine_kwargs: dict,
    paths: list[str],
    options: TranscribeOptions,
    fmt: str,
    *,
    address: str | None,
    num_workers: int,
    gpus_per_worker: float,
    cpus_per_worker: float,
) -> Iterator[tuple[dict, str | None]]:
    """Yield (record, per-file output) for every path, in the order Ray finishes them."""
    if address is None:  # a local Ray: the actors see this machine's files, so a missing checkpoint fails here
        from polyasr.locate import locate_checkpoint
        from polyasr.registry import get_spec

        spec, download = get_spec(engine_kwargs["model"]), engine_kwargs.get("allow_download", False)
        locate_checkpoint(spec, engine_kwargs.get("path"), allow_download=download)  # once, for every actor
    ray = connect(address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the job's own bar counts files and audio hours
    ds = ray.data.from_items(
        [{"path": p} for p in paths], override_num_blocks=max(1, -(-len(paths) // FILES_PER_BLOCK))
    )
    ds = ds.map(_decode_row, num_cpus=DECODE_CPUS)
    ds = ds.map_batches(
        _Transcriber,
        fn_constructor_kwargs={"engine_kwargs": engine_kwargs, "options": options, "fmt": fmt},
        batch_size=max(options.batch_size, 1),
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_gpus=gpus_per_worker or None,
        num_cpus=cpus_per_worker,
    )
    try:
        for row in ds.iter_rows():
            yield json.loads(row["record"]), row["rendered"] or None
    except ray.exceptions.RayError as e:
        cause = _asr_cause(e)
        if cause is not None:
            raise cause from e
        raise


def _asr_cause(error: BaseException) -> AsrError | None:
    """The AsrError (e.g. a model that cannot load) a Ray task or actor failed with, if any. Ray
    re-raises an actor's death without the original exception object, naming it in its message
    ("polyasr.errors.ModelNotFoundError: ..."), so that line is read back."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, AsrError):
            return error
        found = _POLYASR_ERROR.findall(str(error))
        if found:
            name, message = found[-1]
            cls = getattr(errors, name, None)
            usable = isinstance(cls, type) and issubclass(cls, AsrError) and not issubclass(cls, errors.AudioError)
            return cls(message) if usable else AsrError(message)
        error = getattr(error, "cause", None) or error.__cause__
    return None
