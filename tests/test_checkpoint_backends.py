"""The durable checkpointers (SQLite file, JSON directory, PostgreSQL) against one contract: history,
monotonic latest, exact round trips, deletes, pruning, concurrency checks and reopening.

Real I/O and worker threads: plain trio tests, no autojump clock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from treadle.runtime.checkpointers.checkpoint import Checkpoint, InMemoryCheckpointer, StepInfo
from treadle.runtime.checkpointers.codec import StepCodec
from treadle.runtime.errors import CheckpointNotFound, ConcurrencyConflict
from treadle.runtime.graph.state import ErrorEvent, ErrorScope, Message, VersionedState

pytest_plugins = ["pg_fixtures"]

BACKENDS = ["sqlite", "json", "postgres"]
SHARED = ["sqlite", "postgres"]  # safe for two writers at once (the JSON store is one-process)


def state(n: int, *, extra: dict[str, Any] | None = None, errors: int = 0) -> VersionedState:
    """A state with ``n`` messages and a few extra keys; versions follow ``n``."""
    return VersionedState(
        messages=[Message.user(f"message {i} " + "x" * 20) for i in range(n)],
        extra={"n": n, **(extra or {})},
        errors=[
            ErrorEvent(when=i, scope=ErrorScope.node("a", i), error=f"boom {i}")
            for i in range(errors)
        ],
        messages_version=n + 1,
        extra_version=n + 1,
        errors_version=errors + 1,
    )


def checkpoint(step: int, st: VersionedState | None = None, *, session: str = "s") -> Checkpoint:
    return Checkpoint(
        session_id=session,
        step=step,
        state=st if st is not None else state(step),
        frontier=("b", "c") if step % 2 else ("a",),
        versions_seen={"a": (step, step), "b": (1, step)},
        join_state={"b|c->d": ("b",)} if step % 3 == 0 else {},
        concurrency_limit=4,
        created_at=1_000 * step,
        ran_nodes=("a",) if step else (),
        skipped_nodes=("b",) if step % 2 else (),
        updated_channels=("messages", "extra") if step else (),
    )


def exact(cp: Checkpoint) -> str:
    """A canonical text that tells 1, 1.0 and True apart (``==`` does not)."""
    return json.dumps(cp.to_json_value(), sort_keys=True)


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(
    kind: str, make_backend: Callable[..., Any], nursery: trio.Nursery
) -> AsyncIterator[Any]:
    backend = make_backend(kind)
    await backend.open(nursery)
    yield backend
    await backend.aclose()


async def test_history_round_trips_every_step(store: Any) -> None:
    saved = [checkpoint(step, state(step, errors=step // 3)) for step in range(8)]
    for cp in saved:
        await store.save(cp)
    for cp in saved:
        assert exact(await store.load("s", cp.step)) == exact(cp)
    latest = await store.load_latest("s")
    assert latest is not None
    assert exact(latest) == exact(saved[-1])
    assert await store.list_steps("s") == [cp.info() for cp in saved]
    assert await store.list_sessions() == ["s"]


async def test_values_round_trip_exactly(store: Any) -> None:
    tricky = {
        "int": 1,
        "true": True,
        "float": 1.0,
        "big_float": 1e300,
        "tiny": 5e-324,
        "neg_zero": -0.0,
        "huge_int": 12345678901234567890123,
        "nested": {"list": [1, 1.5, False, None, "x"], "empty": {}},
        "text": 'naïve ☃ "quotes" \\ \u0000 nul',
        "null": None,
    }
    st0 = VersionedState(messages=[Message("custom-role", "\u0000 and ☃")], extra=tricky)
    await store.save(checkpoint(0, st0))
    # A delta flips types only: 1 -> True -> 1.0 must be stored as such.
    st1 = VersionedState(
        messages=[*st0.messages, Message.assistant("")],
        extra={**tricky, "int": True, "true": 1, "float": 1},
        extra_version=2,
        messages_version=2,
    )
    await store.save(checkpoint(1, st1))
    for cp in (checkpoint(0, st0), checkpoint(1, st1)):
        assert exact(await store.load("s", cp.step)) == exact(cp)


async def test_latest_is_monotonic(store: Any) -> None:
    await store.save(checkpoint(5))
    await store.save(checkpoint(2, state(20)))
    latest = await store.load_latest("s")
    assert latest is not None
    assert latest.step == 5
    assert exact(latest) == exact(checkpoint(5))
    assert exact(await store.load("s", 2)) == exact(checkpoint(2, state(20)))
    assert [i.step for i in await store.list_steps("s")] == [2, 5]


async def test_replacing_a_step_leaves_later_steps_intact(store: Any) -> None:
    saved = [checkpoint(step, state(step, extra={f"k{step}": step})) for step in range(1, 7)]
    for cp in saved:
        await store.save(cp)
    replacement = checkpoint(3, state(40, extra={"other": "value"}))
    await store.save(replacement)
    assert exact(await store.load("s", 3)) == exact(replacement)
    for cp in saved:
        if cp.step != 3:
            assert exact(await store.load("s", cp.step)) == exact(cp)
    # Resaving the latest step replaces it too.
    await store.save(checkpoint(6, state(2)))
    latest = await store.load_latest("s")
    assert latest is not None
    assert exact(latest) == exact(checkpoint(6, state(2)))


async def test_steps_are_encoded_on_the_trio_thread(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The connection thread only writes: once a store knows a session's latest step, the next step
    # is encoded (as a delta or a snapshot) by the caller, before the call into the thread.
    encoders: list[int] = []
    encode = StepCodec.encode

    def spy(self: StepCodec, *args: Any, **kwargs: Any) -> Any:
        encoders.append(threading.get_ident())
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(StepCodec, "encode", spy)
    await store.save(checkpoint(0))  # the first step: nothing to draft against
    encoders.clear()
    for step in range(1, 80):  # long enough for chain restarts (snapshots) too
        await store.save(checkpoint(step))
    assert encoders == [threading.get_ident()] * 79


async def test_a_step_encoded_ahead_is_redone_after_a_replaced_step_moved_the_log(
    store: Any,
) -> None:
    # A store encodes each step before its transaction, against the last step it wrote. Replacing
    # an older step appends to the message log without changing the latest step, so that draft no
    # longer fits and must be encoded again: written as drafted, its messages would overwrite the
    # replacement's.
    saved = {step: checkpoint(step, state(step + 1)) for step in range(3)}
    for cp in saved.values():
        await store.save(cp)
    saved[1] = checkpoint(1, state(5, extra={"replaced": True}))
    await store.save(saved[1])
    saved[3] = checkpoint(3, state(4))
    await store.save(saved[3])
    for step, cp in saved.items():
        assert exact(await store.load("s", step)) == exact(cp)


@pytest.mark.parametrize("kind", SHARED)
async def test_a_step_encoded_ahead_is_redone_after_another_writer(
    kind: str, make_backend: Callable[..., Any], nursery: trio.Nursery
) -> None:
    # The same with another store writing the session in between: each store's own writes must
    # leave the other's steps intact, messages included.
    ours, theirs = make_backend(kind), make_backend(kind)
    await ours.open(nursery)
    await theirs.open(nursery)
    try:
        saved = {0: checkpoint(0, state(1)), 1: checkpoint(1, state(2))}
        for cp in saved.values():
            await ours.save(cp)
        saved[2] = checkpoint(2, state(3, extra={"by": "theirs"}))
        await theirs.save(saved[2])
        saved[3] = checkpoint(3, state(4))
        await ours.save(saved[3])
        saved[4] = checkpoint(4, state(6))
        await theirs.save(saved[4])
        for reader in (ours, theirs):
            for step, cp in saved.items():
                assert exact(await reader.load("s", step)) == exact(cp)
    finally:
        await ours.aclose()
        await theirs.aclose()


@pytest.mark.parametrize("kind", SHARED)
async def test_a_step_encoded_ahead_is_redone_after_another_writer_replaced_the_latest(
    kind: str, make_backend: Callable[..., Any], nursery: trio.Nursery
) -> None:
    # Another store rewrites the latest step in place: same step, no messages (so the same message
    # log end), new content. Only the head's token tells; a delta drafted against the old content
    # must not be stored. (The padding makes deltas worth writing.)
    ours, theirs = make_backend(kind), make_backend(kind)
    await ours.open(nursery)
    await theirs.open(nursery)
    pad = {"pad": "p" * 400}
    try:
        await ours.save(checkpoint(0, state(0, extra=pad)))
        await ours.save(checkpoint(1, state(0, extra={**pad, "who": "ours"})))
        replaced = checkpoint(1, state(0, extra={**pad, "who": "theirs", "more": [1, 2]}))
        await theirs.save(replaced)
        after = checkpoint(2, state(0, extra={**pad, "who": "ours", "more": [1, 2]}))
        await ours.save(after)
        for reader in (ours, theirs):
            assert exact(await reader.load("s", 1)) == exact(replaced)
            assert exact(await reader.load("s", 2)) == exact(after)
    finally:
        await ours.aclose()
        await theirs.aclose()


async def test_missing_steps_and_sessions(store: Any) -> None:
    assert await store.load_latest("nobody") is None
    assert await store.list_steps("nobody") == []
    with pytest.raises(CheckpointNotFound) as info:
        await store.load("nobody", 0)
    assert info.value.session_id == "nobody"
    await store.save(checkpoint(1))
    with pytest.raises(CheckpointNotFound, match="at step 7"):
        await store.load("s", 7)


async def test_sessions_are_listed_sorted_and_deleted(store: Any) -> None:
    for session in ["b", "a/with/slashes", "c d", ".hidden", "ünï"]:
        await store.save(checkpoint(1, session=session))
        await store.save(checkpoint(2, session=session))
    assert await store.list_sessions() == sorted(["b", "a/with/slashes", "c d", ".hidden", "ünï"])
    assert await store.delete_session("a/with/slashes") is True
    assert await store.delete_session("a/with/slashes") is False
    assert await store.load_latest("a/with/slashes") is None
    assert "a/with/slashes" not in await store.list_sessions()
    # A deleted session starts again from nothing.
    await store.save(checkpoint(1, session="a/with/slashes"))
    assert [i.step for i in await store.list_steps("a/with/slashes")] == [1]
    latest = await store.load_latest(".hidden")
    assert latest is not None
    assert latest.step == 2


async def test_prune_keep_last_never_removes_the_latest(store: Any) -> None:
    saved = [checkpoint(step) for step in range(10)]
    for cp in saved:
        await store.save(cp)
    await store.save(checkpoint(3, session="other"))
    assert await store.prune(keep_last=3, session_id="s") == 7
    assert [i.step for i in await store.list_steps("s")] == [7, 8, 9]
    for cp in saved[7:]:
        assert exact(await store.load("s", cp.step)) == exact(cp)
    with pytest.raises(CheckpointNotFound):
        await store.load("s", 6)
    assert await store.prune(keep_last=0) == 2  # the latest of each session stays
    assert [i.step for i in await store.list_steps("s")] == [9]
    assert [i.step for i in await store.list_steps("other")] == [3]
    latest = await store.load_latest("s")
    assert latest is not None
    assert exact(latest) == exact(saved[9])


async def test_prune_older_than_with_and_without_keep_last(store: Any) -> None:
    for step in range(10):
        await store.save(checkpoint(step))  # created_at = 1000 * step ms
    # Older than 5.5 s before t=10 s: steps 0..4.
    assert await store.prune(older_than=5.5, now_ms=10_000) == 5
    assert [i.step for i in await store.list_steps("s")] == [5, 6, 7, 8, 9]
    # Both criteria must hold: old AND outside the last 4.
    assert await store.prune(older_than=0, keep_last=4, now_ms=10_000) == 1
    assert [i.step for i in await store.list_steps("s")] == [6, 7, 8, 9]
    for step in (6, 7, 8, 9):
        assert exact(await store.load("s", step)) == exact(checkpoint(step))
    with pytest.raises(ValueError, match="older_than"):
        await store.prune()


async def test_concurrency_check(store: Any) -> None:
    await store.save_with_concurrency_check(checkpoint(0), None)
    with pytest.raises(ConcurrencyConflict) as info:
        await store.save_with_concurrency_check(checkpoint(1), None)
    assert (info.value.expected_step, info.value.actual_step) == (None, 0)
    await store.save_with_concurrency_check(checkpoint(1), 0)
    with pytest.raises(ConcurrencyConflict, match="expected latest step 0, found 1"):
        await store.save_with_concurrency_check(checkpoint(2), 0)
    assert [i.step for i in await store.list_steps("s")] == [0, 1]


@pytest.mark.parametrize("kind", SHARED, indirect=True)
async def test_two_writers_expecting_the_same_step_exactly_one_wins(
    kind: str, make_backend: Callable[..., Any], nursery: trio.Nursery
) -> None:
    first, second = make_backend(kind), make_backend(kind)  # two connections
    await first.open(nursery)
    await second.open(nursery)
    try:
        await first.save(checkpoint(5))
        results: dict[str, BaseException | None] = {}

        async def write(name: str, backend: Any, cp: Checkpoint) -> None:
            try:
                await backend.save_with_concurrency_check(cp, 5)
            except ConcurrencyConflict as exc:
                results[name] = exc
            else:
                results[name] = None

        mine, theirs = checkpoint(6, state(1)), checkpoint(6, state(30))
        async with trio.open_nursery() as writers:
            writers.start_soon(write, "first", first, mine)
            writers.start_soon(write, "second", second, theirs)
        losers = [name for name, error in results.items() if error is not None]
        assert len(losers) == 1, results
        winner = theirs if losers == ["first"] else mine
        latest = await first.load_latest("s")
        assert latest is not None
        assert exact(latest) == exact(winner)
        assert [i.step for i in await second.list_steps("s")] == [5, 6]
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.parametrize("kind", SHARED, indirect=True)
async def test_a_batch_is_stored_whole_or_not_at_all(store: Any) -> None:
    batch = [checkpoint(step, session=session) for step in range(4) for session in ("x", "y")]
    await store.save_many(batch)
    for cp in batch:
        assert exact(await store.load(cp.session_id, cp.step)) == exact(cp)
    broken = Checkpoint(
        session_id="x",
        step=5,
        state=VersionedState(),
        frontier=(),
        versions_seen={},
        join_state={},
        concurrency_limit=1,
        created_at=0,
    )
    object.__setattr__(broken, "frontier", (object(),))
    with pytest.raises(Exception, match="cannot be stored"):
        await store.save_many([checkpoint(4, session="x"), checkpoint(4, session="y"), broken])
    assert [i.step for i in await store.list_steps("x")] == [0, 1, 2, 3]
    assert [i.step for i in await store.list_steps("y")] == [0, 1, 2, 3]
    # The batch's failure left no stale memory behind: later writes still round-trip.
    await store.save(checkpoint(4, session="x"))
    assert exact(await store.load("x", 4)) == exact(checkpoint(4, session="x"))


async def test_reopening_reads_what_was_written(
    kind: str, make_backend: Callable[..., Any], nursery: trio.Nursery
) -> None:
    backend = make_backend(kind)
    await backend.open(nursery)
    for step in range(5):
        await backend.save(checkpoint(step))
    await backend.aclose()

    again = make_backend(kind)
    await again.open(nursery)
    try:
        latest = await again.load_latest("s")
        assert latest is not None
        assert exact(latest) == exact(checkpoint(4))
        # A resumed session goes on where it stopped.
        await again.save(checkpoint(5))
        assert [i.step for i in await again.list_steps("s")] == [0, 1, 2, 3, 4, 5]
        assert exact(await again.load("s", 5)) == exact(checkpoint(5))
    finally:
        await again.aclose()


async def test_a_value_that_is_not_json_fails_the_save_clearly(store: Any) -> None:
    record = checkpoint(1)
    bad = Checkpoint(
        session_id="s",
        step=1,
        state=record.state,
        frontier=(),
        versions_seen={},
        join_state={},
        concurrency_limit=1,
        created_at=0,
    )
    object.__setattr__(bad, "frontier", (object(),))  # a record no runner could build
    with pytest.raises(Exception, match="cannot be stored"):
        await store.save(bad)
    assert await store.load_latest("s") is None


# -- in memory ---------------------------------------------------------------------------------------


async def test_in_memory_keeps_the_latest_only(nursery: trio.Nursery) -> None:
    store = InMemoryCheckpointer()
    await store.open(nursery)
    await store.save(checkpoint(1))
    await store.save(checkpoint(3))
    await store.save(checkpoint(2))  # lower: ignored, the latest is monotonic
    latest = await store.load_latest("s")
    assert latest is not None
    assert latest.step == 3
    assert await store.list_steps("s") == [checkpoint(3).info()]
    assert (await store.load("s", 3)).step == 3
    with pytest.raises(CheckpointNotFound):
        await store.load("s", 1)
    assert await store.prune(keep_last=0) == 0
    with pytest.raises(ConcurrencyConflict):
        await store.save_with_concurrency_check(checkpoint(4), 2)
    await store.save_with_concurrency_check(checkpoint(4), 3)
    assert await store.list_sessions() == ["s"]
    assert await store.delete_session("s") is True
    assert await store.list_sessions() == []
    assert await store.list_steps("s") == []
    assert StepInfo("s", 1, 0) == StepInfo("s", 1, 0, (), (), ())
    await store.aclose()
