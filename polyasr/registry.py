"""The model registry: every id polyasr knows, which family loads it, and the families' declarations.

Each family declares itself in its own package (`polyasr/models/<family>/__init__.py`: a `Family`
with its ids, loader, checkpoint layout and converter); `polyasr.models.FAMILIES` lists the
built-in ones, registered here at import. `register_family` adds one more from anywhere
importable. Nothing in this module names a family.

A model whose implementation has not landed is listed with `status="planned"` and refuses to
load with a message; it never produces output.
"""

from __future__ import annotations

import enum
import importlib

from polyasr.errors import ModelNotImplementedError, UnknownModelError
from polyasr.models.base import AVAILABLE, PLANNED, CheckpointLayout, Family, ModelSpec

__all__ = [
    "AVAILABLE",
    "PLANNED",
    "CheckpointLayout",
    "Family",
    "ModelSpec",
    "REGISTRY",
    "ALIASES",
    "FAMILIES",
    "ModelType",
    "DEFAULT_MODEL",
    "register_family",
    "unregister_family",
    "get_spec",
    "family_of",
    "loader_for",
    "converter_for",
]

REGISTRY: dict[str, ModelSpec] = {}
ALIASES: dict[str, str] = {}
FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> None:
    """Make `family`'s ids loadable (`AsrEngine.from_model`), findable and listed (`polyasr models list`).

    An id or alias another family already holds, or a spec naming another family, is a ValueError.
    """
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    for spec in family.specs:
        if spec.family != family.name:
            raise ValueError(f"{spec.id}: spec names family {spec.family!r}, declared in {family.name!r}")
    ids = [s.id for s in family.specs] + [a for a, _ in family.aliases]
    taken = [i for i in ids if i in REGISTRY or i in ALIASES]
    if taken or len(set(ids)) != len(ids):
        raise ValueError(f"model family {family.name!r}: ids already taken or repeated: {', '.join(taken) or ids}")
    FAMILIES[family.name] = family
    REGISTRY.update((s.id, s) for s in family.specs)
    ALIASES.update(family.aliases)


def unregister_family(name: str) -> None:
    """Remove a family `register_family` added (its ids and aliases)."""
    family = FAMILIES.pop(name)
    for spec in family.specs:
        REGISTRY.pop(spec.id, None)
    for alias, _ in family.aliases:
        ALIASES.pop(alias, None)


def _register_builtin() -> None:
    from polyasr.models import FAMILIES as names

    for name in names:
        register_family(importlib.import_module(f"polyasr.models.{name}").FAMILY)


_register_builtin()

ModelType = enum.Enum("ModelType", {s.upper().replace("-", "_").replace(".", "_"): s for s in REGISTRY}, type=str)
ModelType.__doc__ = "The built-in model ids, as an enum (`ModelType.WHISPER_BASE == 'whisper-base'`)."

DEFAULT_MODEL = "whisper-base"


def get_spec(model: str | ModelType) -> ModelSpec:
    key = model.value if isinstance(model, ModelType) else str(model).strip()
    key = ALIASES.get(key.lower(), key.lower())
    if key not in REGISTRY:
        known = ", ".join(REGISTRY)
        raise UnknownModelError(f"unknown model id {str(model)!r}; known ids: {known} (see `polyasr models list`)")
    return REGISTRY[key]


def family_of(spec: ModelSpec) -> Family:
    return FAMILIES[spec.family]


def loader_for(spec: ModelSpec):
    """The family's load function, imported only now (no heavy imports at `import polyasr`)."""
    if not spec.available:
        raise ModelNotImplementedError(
            f"model {spec.id!r} is registered but not implemented yet ({spec.note}); "
            f"available now: {', '.join(s.id for s in REGISTRY.values() if s.available)}"
        )
    return _resolve(family_of(spec).loader)


def converter_for(spec: ModelSpec):
    """The family's `convert` function, or None when its checkpoints load as they are."""
    converter = family_of(spec).converter
    return None if converter is None else _resolve(converter)


def _resolve(target):
    if not isinstance(target, str):
        return target
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)
