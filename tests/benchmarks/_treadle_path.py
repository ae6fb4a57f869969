"""Importing this makes ``import treadle`` work from an uninstalled checkout (its root is the package).

Benchmarks run as scripts (``python tests/benchmarks/bench_x.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _load_treadle() -> None:
    if importlib.util.find_spec("treadle") is not None:
        return
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "treadle", root / "__init__.py", submodule_search_locations=[str(root)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["treadle"] = module
    spec.loader.exec_module(module)


_load_treadle()
