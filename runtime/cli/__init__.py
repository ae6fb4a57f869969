"""The ``treadle`` command line: one module per command, ``main`` wires them into one parser."""

from .main import main

__all__ = ["main"]
