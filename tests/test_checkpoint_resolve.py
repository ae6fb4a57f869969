"""Choosing a checkpointer: URLs, CheckpointerType and the environment (SPEC §4.4), ``.env`` files,
password masking, and the record's JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from treadle.runtime.checkpointers import JSONCheckpointer, PostgresCheckpointer, SQLiteCheckpointer
from treadle.runtime.checkpointers.checkpoint import (
    Checkpoint,
    CheckpointerType,
    InMemoryCheckpointer,
    default_url,
    mask_url,
    prune_cutoff_ms,
    read_dotenv,
    resolve_checkpointer,
)
from treadle.runtime.graph.state import ErrorEvent, ErrorScope, Message, VersionedState


def test_none_and_memory_urls_give_in_memory() -> None:
    assert isinstance(resolve_checkpointer(None), InMemoryCheckpointer)
    assert isinstance(resolve_checkpointer("memory://"), InMemoryCheckpointer)
    assert isinstance(resolve_checkpointer(CheckpointerType.IN_MEMORY), InMemoryCheckpointer)


def test_an_instance_is_used_as_is() -> None:
    store = InMemoryCheckpointer()
    assert resolve_checkpointer(store) is store


def test_sqlite_urls_relative_and_absolute(tmp_path: Path) -> None:
    rel = resolve_checkpointer("sqlite:///runs/a.db", cwd=tmp_path)
    assert isinstance(rel, SQLiteCheckpointer)
    assert rel.path == tmp_path / "runs" / "a.db"
    absolute = resolve_checkpointer("sqlite:////var/data/b.db", cwd=tmp_path)
    assert isinstance(absolute, SQLiteCheckpointer)
    assert absolute.path == Path("/var/data/b.db")
    assert resolve_checkpointer("SQLITE:///x.db", cwd=tmp_path).path == tmp_path / "x.db"  # type: ignore[attr-defined]


def test_postgres_and_json_urls(tmp_path: Path) -> None:
    for url in ("postgresql://u:pw@db:5432/app", "postgres://u:pw@db/app"):
        store = resolve_checkpointer(url)
        assert isinstance(store, PostgresCheckpointer)
        assert store.url == url
        assert store.schema == "treadle"
    with_schema = resolve_checkpointer("postgresql://db/app?schema=runs&sslmode=disable")
    assert isinstance(with_schema, PostgresCheckpointer)
    assert with_schema.schema == "runs"
    assert with_schema.url == "postgresql://db/app?sslmode=disable"
    files = resolve_checkpointer("json:///state/dir", cwd=tmp_path)
    assert isinstance(files, JSONCheckpointer)
    assert files.directory == tmp_path / "state" / "dir"


def test_unknown_scheme_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown checkpointer URL scheme 'mysql'") as info:
        resolve_checkpointer("mysql://root:hunter2@db/x")
    assert "sqlite:///" in str(info.value)
    assert "postgresql://" in str(info.value)
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError, match="is not a URL"):
        resolve_checkpointer("runs.db")
    with pytest.raises(TypeError, match="CheckpointerType, a URL or a Checkpointer"):
        resolve_checkpointer(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="names no path"):
        resolve_checkpointer("sqlite:///")


def test_sqlite_type_resolution_order(tmp_path: Path) -> None:
    env = {"TREADLE_SQLITE_URL": "sqlite:///first.db", "SQLITE_DB_NAME": "second.db"}
    assert default_url(CheckpointerType.SQLITE, environ=env, cwd=tmp_path) == "sqlite:///first.db"
    del env["TREADLE_SQLITE_URL"]
    store = resolve_checkpointer(CheckpointerType.SQLITE, environ=env, cwd=tmp_path)
    assert isinstance(store, SQLiteCheckpointer)
    assert store.path == tmp_path / "second.db"
    store = resolve_checkpointer(CheckpointerType.SQLITE, environ={}, cwd=tmp_path)
    assert isinstance(store, SQLiteCheckpointer)
    assert store.path == tmp_path / "treadle.db"


def test_postgres_type_resolution_order(tmp_path: Path) -> None:
    env = {"TREADLE_POSTGRES_URL": "postgresql://one/a", "DATABASE_URL": "postgresql://two/b"}
    assert default_url(CheckpointerType.POSTGRES, environ=env, cwd=tmp_path) == "postgresql://one/a"
    del env["TREADLE_POSTGRES_URL"]
    assert default_url(CheckpointerType.POSTGRES, environ=env, cwd=tmp_path) == "postgresql://two/b"
    assert (
        default_url(CheckpointerType.POSTGRES, environ={}, cwd=tmp_path)
        == "postgresql://localhost/treadle"
    )
    store = resolve_checkpointer(CheckpointerType.POSTGRES, environ={}, cwd=tmp_path)
    assert isinstance(store, PostgresCheckpointer)
    assert default_url(CheckpointerType.JSON, environ={}, cwd=tmp_path) == (
        "json:///treadle_checkpoints"
    )


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# settings\n"
        "export SQLITE_DB_NAME='from-dotenv.db'\n"
        'DATABASE_URL="postgresql://dotenv/db"  \n'
        "TREADLE_POSTGRES_URL=postgresql://dotenv-first/db # a comment\n"
        "not a pair\n"
    )
    store = resolve_checkpointer(CheckpointerType.SQLITE, environ={}, cwd=tmp_path)
    assert isinstance(store, SQLiteCheckpointer)
    assert store.path == tmp_path / "from-dotenv.db"
    assert (
        default_url(CheckpointerType.POSTGRES, environ={}, cwd=tmp_path)
        == "postgresql://dotenv-first/db"
    )
    real = {"TREADLE_POSTGRES_URL": "postgresql://real/db"}
    assert default_url(CheckpointerType.POSTGRES, environ=real, cwd=tmp_path) == (
        "postgresql://real/db"
    )
    assert read_dotenv(tmp_path / "missing.env") == {}
    assert read_dotenv(tmp_path / ".env")["DATABASE_URL"] == "postgresql://dotenv/db"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:s3cret@db:5432/app", "postgresql://user:***@db:5432/app"),
        ("postgresql://user@db/app", "postgresql://user@db/app"),
        (
            "postgresql://db/app?password=s3cret&sslmode=require",
            "postgresql://db/app?password=***&sslmode=require",
        ),
        ("host=db user=u password=s3cret dbname=app", "host=db user=u password=*** dbname=app"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_passwords_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_prune_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="older_than"):
        prune_cutoff_ms(None, None, 0)
    with pytest.raises(ValueError, match="keep_last"):
        prune_cutoff_ms(None, -1, 0)
    with pytest.raises(ValueError, match="older_than must be >= 0"):
        prune_cutoff_ms(-1.0, None, 0)
    import datetime

    assert prune_cutoff_ms(datetime.timedelta(minutes=1), None, 100_000) == 40_000
    assert prune_cutoff_ms(None, 3, 100_000) is None


# -- the record --------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
names = st.text(min_size=1, max_size=4)


@given(
    step=st.integers(0, 10**6),
    msgs=st.lists(st.tuples(names, st.text(max_size=8)), max_size=3),
    extra=st.dictionaries(st.text(max_size=4), json_scalars, max_size=4),
    frontier=st.lists(names, max_size=3),
    seen=st.dictionaries(names, st.tuples(st.integers(1, 9), st.integers(1, 9)), max_size=3),
    joins=st.dictionaries(names, st.lists(names, max_size=2), max_size=2),
)
def test_checkpoint_json_round_trip(
    step: int,
    msgs: list[tuple[str, str]],
    extra: dict[str, object],
    frontier: list[str],
    seen: dict[str, tuple[int, int]],
    joins: dict[str, list[str]],
) -> None:
    cp = Checkpoint(
        session_id="s",
        step=step,
        state=VersionedState(
            messages=[Message(r, c) for r, c in msgs],
            extra=extra,
            errors=[ErrorEvent(when=1, scope=ErrorScope.node("n", 1), error="e")],
            messages_version=3,
        ),
        frontier=frontier,
        versions_seen=seen,
        join_state=joins,
        concurrency_limit=2,
        created_at=7,
        ran_nodes=frontier,
        skipped_nodes=(),
        updated_channels=("messages",),
    )
    text = json.dumps(cp.to_json_value())
    back = Checkpoint.from_json_value(json.loads(text))
    assert back == cp
    assert json.dumps(back.to_json_value()) == text


def test_malformed_checkpoint_documents_are_refused() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        Checkpoint.from_json_value([])
    with pytest.raises(
        ValueError, match=r"checkpoint\['step'\] must be of JSON type int, got True"
    ):
        Checkpoint.from_json_value({"session_id": "s", "step": True})
