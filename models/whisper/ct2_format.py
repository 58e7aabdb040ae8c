"""Reader for CTranslate2's `model.bin` (binary version 3..6), the format faster-whisper ships.

Layout (little-endian), as CTranslate2's ModelSpec serialises it:
    u32 binary_version
    str spec_name, u32 spec_revision           (version >= 2)
    u32 n_variables
    n_variables x { str name, u8 rank, u32 dims[rank], u8 dtype_id, u32 n_bytes, bytes[n_bytes] }
    u32 n_aliases                               (version >= 3)
    n_aliases x { str alias, str variable_name }
where `str` is u16 length (including the trailing NUL) + bytes. dtype ids:
0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16.

Arrays are returned as numpy views on one memory map of the file: nothing is copied
until a tensor is converted for the backend. bfloat16 (which numpy lacks) is returned as
raw uint16 with `dtypes[name] == "bfloat16"` so the caller converts it.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polyasr.errors import CheckpointError

_DTYPES = {
    0: ("float32", np.float32),
    1: ("int8", np.int8),
    2: ("int16", np.int16),
    3: ("int32", np.int32),
    4: ("float16", np.float16),
    5: ("bfloat16", np.uint16),
}
_SUPPORTED_VERSIONS = range(3, 7)


@dataclass
class Ct2Model:
    spec_name: str
    revision: int
    variables: dict[str, np.ndarray]
    dtypes: dict[str, str]
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        """A variable by name, following aliases (CTranslate2 stores shared weights once)."""
        return self.variables[self.aliases.get(name, name)]

    def names(self) -> set[str]:
        return set(self.variables) | set(self.aliases)


class _Cursor:
    def __init__(self, buf, path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise CheckpointError(
                f"{self.path}: truncated CTranslate2 model.bin (needs {n} bytes at offset {self.pos})"
            )
        view = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (n,) = self.unpack("H")
        return bytes(self.take(n)).rstrip(b"\0").decode("utf-8")


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Parse `model.bin` into named numpy arrays (memory-mapped, zero-copy)."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as e:  # empty file
            raise CheckpointError(f"{path}: empty file, not a CTranslate2 model.bin") from e
    cur = _Cursor(buf, path)
    (version,) = cur.unpack("I")
    if version not in _SUPPORTED_VERSIONS:
        raise CheckpointError(
            f"{path}: not a CTranslate2 model.bin this reader knows (binary version {version}, "
            f"supported {_SUPPORTED_VERSIONS.start}..{_SUPPORTED_VERSIONS.stop - 1})"
        )
    spec_name = cur.string()
    (revision,) = cur.unpack("I")
    (n_vars,) = cur.unpack("I")
    variables, dtypes = {}, {}
    for _ in range(n_vars):
        name = cur.string()
        (rank,) = cur.unpack("B")
        shape = cur.unpack(f"{rank}I") if rank else ()
        dtype_id, n_bytes = cur.unpack("BI")
        if dtype_id not in _DTYPES:
            raise CheckpointError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        dname, np_dtype = _DTYPES[dtype_id]
        count = int(np.prod(shape)) if shape else 1
        if count * np.dtype(np_dtype).itemsize != n_bytes:
            raise CheckpointError(f"{path}: variable {name!r} has {n_bytes} bytes for shape {shape} {dname}")
        variables[name] = np.frombuffer(cur.take(n_bytes), dtype=np_dtype).reshape(shape)
        dtypes[name] = dname
    aliases = {}
    (n_alias,) = cur.unpack("I")
    for _ in range(n_alias):
        alias = cur.string()
        aliases[alias] = cur.string()
    return Ct2Model(spec_name, revision, variables, dtypes, aliases)
