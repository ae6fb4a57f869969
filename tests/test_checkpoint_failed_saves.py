"""A step that is not stored is not applied: when the save of step N fails, the session stays at
step N-1 in memory, the error is a ``CheckpointBackendError`` naming the session and the step, and a
retry re-runs step N, so the stored history has no gap. A save whose commit went through but whose
answer was lost is recognised when it is retried."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from apps import counter_app

from treadle import AppRunner, CheckpointBackendError, ConcurrencyConflict, VersionedState
from treadle.runtime.checkpointers import SQLiteCheckpointer

pytest_plugins = ["pg_fixtures"]


async def test_a_step_whose_save_fails_is_not_applied_and_reruns_on_retry(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    app = counter_app(limit=5, pause=0)
    with trio.fail_after(30):
        async with AppRunner(
            app, checkpointer=SQLiteCheckpointer(path, busy_timeout=0.05)
        ) as runner:
            await runner.create_session("s", VersionedState(extra={"n": 0}))
            await runner.run_step("s")
            await runner.run_step("s")
            # Another process holds the write lock: SQLite answers "database is locked".
            other = sqlite3.connect(path, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                for _ in range(2):  # however often it is retried while the lock is held
                    with pytest.raises(CheckpointBackendError) as info:
                        await runner.run_step("s")
                    assert info.value.session_id == "s"
                    assert info.value.step == 3
                    assert "session 's'" in str(info.value)
                    assert "step 3" in str(info.value)
                    assert "locked" in str(info.value)
                    view = await runner.get_session("s")
                    assert view.step == 2
                    assert view.state.extra["n"] == 2
                    assert view.frontier == ("tick",)
            finally:
                other.execute("ROLLBACK")
                other.close()
            final = await runner.run_until_complete("s")
            assert final.extra["n"] == 5
            history = await runner.get_state_history("s")
            assert [i.step for i in history] == [0, 1, 2, 3, 4, 5]
            for info_ in history[1:]:
                cp = await runner.load_checkpoint("s", info_.step)
                assert cp.state.extra["n"] == info_.step


class AckLostStatement:
    """A PostgreSQL store's drafted-step statement that commits, then loses the connection before
    the answer arrives."""

    def __init__(self, statement: Any) -> None:
        self.statement = statement

    async def execute(self, *args: Any, **kwargs: Any) -> None:
        import psycopg

        await self.statement.execute(*args, **kwargs)
        raise psycopg.OperationalError("server closed the connection unexpectedly")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_save_that_committed_but_reported_failure_is_recognised_on_retry(
    kind: str, make_backend: Callable[..., Any]
) -> None:
    from pg_fixtures import opened

    app = counter_app(limit=5, pause=0)
    with trio.fail_after(30):
        async with AppRunner(app, checkpointer=make_backend(kind)) as runner:
            await runner.create_session("s", VersionedState(extra={"n": 0}))
            await runner.run_step("s")
            step1 = await runner.load_checkpoint("s", 1)
        step2 = attrs.evolve(
            step1, step=2, state=VersionedState(extra={"n": 2}), created_at=step1.created_at + 1
        )
        async with opened(make_backend(kind)) as store, opened(make_backend(kind)) as other:
            await store.load_latest("s")
            # Every way a store writes: a transaction and (PostgreSQL) the drafted steps' statement,
            # run in the connection thread (several steps) or from the Trio thread (one step).
            seams = [s for s in ("_write_transaction", "_drafted_transaction") if hasattr(store, s)]
            commits = {seam: getattr(store, seam) for seam in seams}

            def ack_lost(commit: Any) -> Any:
                @contextmanager
                def write(*args: Any) -> Iterator[Any]:
                    # The transaction commits; then the connection drops before the answer arrives.
                    with commit(*args) as tx:
                        yield tx
                    raise CheckpointBackendError(kind, "server closed the connection unexpectedly")

                return write

            for seam, commit in commits.items():
                setattr(store, seam, ack_lost(commit))
            # PostgreSQL: the statements run from the Trio thread, one per shape of step.
            statements = dict(getattr(store, "_put_drafts", {}))
            for name, statement in statements.items():
                store._put_drafts[name] = AckLostStatement(statement)
            with pytest.raises(CheckpointBackendError):
                await store.save_with_concurrency_check(step2, 1)
            for seam, commit in commits.items():
                setattr(store, seam, commit)
            if statements:
                store._put_drafts.update(statements)
            # The retry re-ran the step (same content, a later time): recognised, not a conflict.
            retry = attrs.evolve(step2, created_at=step2.created_at + 5)
            await store.save_with_concurrency_check(retry, 1)
            assert [i.step for i in await store.list_steps("s")] == [0, 1, 2]
            assert (await store.load("s", 2)).created_at == step2.created_at
            # Another writer building on step 1, even with the same content, is refused.
            with pytest.raises(ConcurrencyConflict):
                await other.save_with_concurrency_check(retry, 1)
            # So is different content from the first writer.
            changed = attrs.evolve(step2, state=VersionedState(extra={"n": 99}))
            with pytest.raises(ConcurrencyConflict):
                await store.save_with_concurrency_check(changed, 1)
            assert (await store.load("s", 2)).state == step2.state
