"""treadle's adapter for the shared graph-runtime harness ``langgraph_bench.py``, the script that
defines the LangGraph baseline (workloads W0 to W6). With it, both libraries run the same workloads
in one process, interleaved round by round.

Run from the repository root, in an environment that has treadle and LangGraph installed::

    PYTHONPATH=tests/benchmarks python path/to/langgraph_bench.py \\
        --adapter langgraph --adapter harness_adapter:TreadleAdapter --json-out cmp.json

How the workloads map onto treadle:

* A builder opens an :class:`AppRunner`, untimed like LangGraph's ``compile()``. Each timed
  ``run()`` is one fresh session on it, run to completion. A long-lived runner is how treadle is
  meant to be used; ``App.invoke``, which also starts and stops a runner, costs about 0.8 ms more
  per run (``bench_core.py``).
* The harness's ``items`` list (an ``operator.add`` channel in LangGraph) is treadle's append
  channel ``messages``: item ``i`` is ``Message("item", str(i))``, and the growing loop's strings
  are ``Message("grown", text)``. ``counter`` lives in ``extra``.
* Fan-outs run with ``concurrency_limit`` equal to their width. LangGraph runs every task of a step
  at once, while treadle's default limit is ``os.cpu_count()``.
* Durability ``None`` means each library's default: ``"sync"`` for treadle, ``"async"`` for
  LangGraph. Under ``"async"`` and ``"exit"`` a run returns once everything is written, as
  LangGraph's ``ainvoke`` does.
* W4 ``updates``: treadle has no automatic per-node update stream. Each node emits one event
  carrying its update (``ctx.emit``), giving W+2 events a run, as LangGraph has. ``custom`` is the
  workers' K ``ctx.emit`` events each; ``both`` is the two together. A run counts the events its
  subscriber receives, without the closing ``STREAM_END``, and fails if any was dropped.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import _treadle_path  # noqa: F401  (makes `import treadle` work uninstalled)
import trio

# After the path setup:
from treadle import (
    END,
    START,
    AppRunner,
    EventBus,
    GraphBuilder,
    Message,
    NodePartial,
    VersionedState,
    is_sentinel,
)
from treadle.runtime.checkpointers import SQLiteCheckpointer

Run = Callable[[], Awaitable[dict[str, Any]]]


def _item(i: int) -> Message:
    return Message("item", str(i))


class TreadleAdapter:
    name = "treadle"

    def versions(self) -> dict[str, str]:
        out = {}
        for pkg in ("treadle", "trio", "attrs", "sqlite-utils"):
            try:
                out[pkg] = version(pkg)
            except PackageNotFoundError:
                out[pkg] = "not installed"
        return out

    def preload(self) -> None:
        """Import everything a run uses, so W5's "before" figure includes the import cost."""
        import treadle.runtime.checkpointers.sqlite  # noqa: F401

    def run(self, afn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return trio.run(afn, *args)

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    # -- W0, W1 --------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def invoke1(self) -> AsyncIterator[Run]:
        async def only(snapshot: Any, ctx: Any) -> NodePartial:
            return NodePartial(messages=[_item(0)])

        builder = GraphBuilder().add_node("only", only)
        async with _sessions(
            builder.add_edge(START, "only").add_edge("only", END).compile()
        ) as run:
            yield run

    @contextlib.asynccontextmanager
    async def chain(self, n: int) -> AsyncIterator[Run]:
        builder = GraphBuilder()
        for i in range(n):
            builder.add_node(f"n{i}", _appender(i))
            builder.add_edge(START if i == 0 else f"n{i - 1}", f"n{i}")
        async with _sessions(builder.add_edge(f"n{n - 1}", END).compile()) as run:
            yield run

    # -- W2, W4, W6 ----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def fanout(self, width: int, jitter_s: float = 0.0) -> AsyncIterator[Run]:
        app = _fanout_app(width, jitter_s=jitter_s)
        async with _sessions(app, concurrency_limit=width) as run:
            yield run

    @contextlib.asynccontextmanager
    async def fanout_stream(self, width: int, mode: str, per_node: int) -> AsyncIterator[Run]:
        if mode not in ("updates", "custom", "both"):
            raise ValueError(f"unknown stream mode {mode!r}")
        updates = mode != "custom"
        custom = per_node if mode != "updates" else 0
        expected = (width + 2 if updates else 0) + width * custom
        app = _fanout_app(width, per_node=custom, updates=updates)
        # Room for a whole run in every buffer: the workload measures delivery, not eviction.
        bus = EventBus(capacity=expected + 16)
        async with AppRunner(app, event_bus=bus, concurrency_limit=width) as runner:

            async def run() -> dict[str, Any]:
                sid = uuid.uuid4().hex
                received = 0
                with runner.event_stream(session_id=sid, capacity=expected + 16) as stream:
                    await runner.create_session(sid, VersionedState())
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(runner.run_until_complete, sid)
                        async for event in stream:
                            if is_sentinel(event):
                                break
                            received += 1
                    if stream.dropped:
                        raise AssertionError(f"the subscriber lost {stream.dropped} events")
                return {"events": received}

            yield run

    # -- W3, W5 --------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def loop(
        self,
        steps: int,
        ckpt: str,
        db_path: str | None = None,
        durability: str | None = None,
        grow: int = 0,
    ) -> AsyncIterator[Run]:
        pad = "x" * max(0, grow - 8)

        async def step(snapshot: Any, ctx: Any) -> NodePartial:
            counter = snapshot.extra["counter"] + 1
            grown = [Message("grown", f"{counter:08d}{pad}")] if grow else ()
            return NodePartial(extra={"counter": counter}, messages=grown)

        def route(snapshot: Any) -> str:
            return END if snapshot.extra["counter"] >= steps else "a"

        app = (
            GraphBuilder()
            .add_node("a", step)
            .add_node("b", step)
            .add_edge(START, "a")
            .add_edge("a", "b")
            .add_conditional_edges("b", route, path_map=["a", END])
            .compile()
        )
        options: dict[str, Any] = {"durability": durability or "sync"}
        if ckpt == "none":
            options["autosave"] = False
        elif ckpt == "sqlite":
            if db_path is None:
                raise ValueError("the SQLite loop needs a db_path")
            options["checkpointer"] = SQLiteCheckpointer(db_path)
        elif ckpt != "memory":
            raise ValueError(f"unknown checkpointer {ckpt!r}")
        async with _sessions(app, VersionedState(extra={"counter": 0}), **options) as run:
            yield run

    def storage_stats(self, db_path: str) -> dict[str, int]:
        """Rows and bytes in a treadle SQLite file, under the harness's names.

        A checkpoint row is one stored step (a delta or a snapshot body); a write row is one stored
        message (the message log holds them in runs) and its bytes are its content. Each message is
        stored once, however many steps follow it.
        """
        con = sqlite3.connect(db_path)
        try:
            c_rows, c_bytes, m_bytes, max_body = con.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0), "
                "coalesce(sum(length(ran_nodes) + length(skipped_nodes) "
                "+ length(updated_channels)), 0), coalesce(max(length(body)), 0) FROM steps"
            ).fetchone()
            w_rows, w_bytes = con.execute(
                "SELECT count(*), coalesce(sum(length(json_extract(m.value, '$.content'))), 0) "
                "FROM messages, json_each(messages.messages) AS m"
            ).fetchone()
        finally:
            con.close()
        return {
            "checkpoint_rows": c_rows,
            "checkpoint_blob_bytes": c_bytes,
            "metadata_bytes": m_bytes,
            "max_checkpoint_blob_bytes": max_body,
            "write_rows": w_rows,
            "write_blob_bytes": w_bytes,
        }


@contextlib.asynccontextmanager
async def _sessions(
    app: Any, state: VersionedState | None = None, **options: Any
) -> AsyncIterator[Run]:
    """An open runner; each call of the yielded ``run`` is one fresh session to completion."""
    async with AppRunner(app, **options) as runner:

        async def run() -> dict[str, Any]:
            sid = uuid.uuid4().hex
            await runner.create_session(sid, state if state is not None else VersionedState())
            final = await runner.run_until_complete(sid)
            await runner.checkpoints.flush()  # "async" and "exit" runs end when written
            items = [int(m.content) if m.role == "item" else m.content for m in final.messages]
            return {"items": items, "counter": final.extra.get("counter")}

        yield run


def _appender(i: int) -> Callable[[Any, Any], Awaitable[NodePartial]]:
    async def node(snapshot: Any, ctx: Any) -> NodePartial:
        return NodePartial(messages=[_item(i)])

    return node


def _fanout_app(
    width: int, *, jitter_s: float = 0.0, per_node: int = 0, updates: bool = False
) -> Any:
    async def quiet(snapshot: Any, ctx: Any) -> None:
        if updates:
            await ctx.emit("update", ctx.node_id)

    def worker(i: int) -> Callable[[Any, Any], Awaitable[NodePartial]]:
        async def node(snapshot: Any, ctx: Any) -> NodePartial:
            if jitter_s:
                await trio.sleep(random.random() * jitter_s)
            for k in range(per_node):
                await ctx.emit("custom", ctx.node_id, k=k)
            if updates:
                await ctx.emit("update", ctx.node_id, items=[i])
            return NodePartial(messages=[_item(i)])

        return node

    builder = GraphBuilder().add_node("dispatch", quiet).add_node("join", quiet)
    builder.add_edge(START, "dispatch")
    workers = [f"w{i}" for i in range(width)]
    for i, name in enumerate(workers):
        builder.add_node(name, worker(i)).add_edge("dispatch", name)
    return builder.add_edge(workers, "join").add_edge("join", END).compile()
