"""Checkpoints: the record, the protocol and the in-memory backend (``checkpoint``), the actor that
serialises a runner's saves (``actor``), and the durable backends SQLite, PostgreSQL and JSON files."""

from .json_files import CorruptFile, JSONCheckpointer
from .postgres import PostgresCheckpointer
from .sqlite import SQLiteCheckpointer

__all__ = ["CorruptFile", "JSONCheckpointer", "PostgresCheckpointer", "SQLiteCheckpointer"]
