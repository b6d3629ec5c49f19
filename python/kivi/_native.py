"""The C++ engine behind the package: kivi._C and the plugin folder the wheel carries.

The registry loads every plugin library once per process (the libraries stay loaded, as in
kivi-host). KIVI_PLUGIN_DIR, a folder or several separated by ':', replaces the package's own
plugin folder (e.g. a kivi build's lib/kivi/plugins, or a folder of third-party plugins).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch  # noqa: F401  (loads libtorch before kivi._C needs it)

from . import _C

KiviError = _C.KiviError

_PACKAGE = Path(__file__).resolve().parent


def plugin_dirs() -> list[str]:
    """The folders whose plugins the registry loads."""
    given = os.environ.get("KIVI_PLUGIN_DIR")
    if given:
        return [d for d in given.split(os.pathsep) if d]
    found = sorted(_PACKAGE.glob("native/lib*/**/kivi/plugins"))
    if not found:
        raise RuntimeError(
            f"kivi: no plugin folder under {_PACKAGE / 'native'}; reinstall the package "
            "(pip install --no-build-isolation ./python) or set KIVI_PLUGIN_DIR"
        )
    return [str(found[0])]


@functools.cache
def registry() -> _C.Registry:
    """The process's plugin registry (loaded at first use)."""
    return _C.Registry(plugin_dirs())


def plugins() -> list[dict]:
    """Every factory the registry holds: kind, name, summary, library, version, file."""
    return registry().plugins()


@functools.cache
def uncached_attention(name: str = "kivi") -> _C.NativeAttention:
    """An attention backend for forward passes without a cache (use_cache=False)."""
    return _C.NativeAttention(registry(), name, "")
