"""The durable checkpointer backends: SQLite, PostgreSQL and JSON files (``runtime.checkpoint`` has
the protocol, the record and the in-memory backend)."""

from .json_files import CorruptFile, JSONCheckpointer
from .postgres import PostgresCheckpointer
from .sqlite import SQLiteCheckpointer

__all__ = ["CorruptFile", "JSONCheckpointer", "PostgresCheckpointer", "SQLiteCheckpointer"]
