"""Lazy re-exports for package ``__init__`` modules (PEP 562 module ``__getattr__``).

The packages re-export their public names without importing the modules behind them, so that importing
a package never pulls in torch, onnxruntime or openvino: a name's module is imported on first access.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], *, extra: Sequence[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Module-level ``__getattr__``, ``__dir__`` and ``__all__`` for ``package``.

    Args:
        package: The package's ``__name__``.
        exports: Public name → the module that defines it.
        extra: Names defined in the package itself that belong in ``__all__``.

    Returns:
        ``(__getattr__, __dir__, __all__)``: assign them at the package's top level.
    """
    names = [*exports, *extra]

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__, names
