"""Checkpoints beyond crash and resume: time travel, durability modes, a damaged JSON store,
pruning, and a store used directly, without a runner.

Run it from the repository root: ``python examples/checkpoints_tour.py``. Everything it writes goes
to a temporary directory. A mock clock makes every stored time, and so the output, the same on
every run.
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path

import trio

from treadle import (
    END,
    START,
    AppRunner,
    Completed,
    GraphBuilder,
    JSONCheckpointer,
    Message,
    MockClock,
    NodeContext,
    NodePartial,
    SQLiteCheckpointer,
    StateSnapshot,
    VersionedState,
)

ROUNDS = 4


async def draft(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    version = snapshot.extra.get("version", 0) + 1
    tone = "formal" if ctx.session_id.endswith("-formal") else "plain"
    return NodePartial(
        messages=[Message.assistant(f"draft {version} ({tone})")], extra={"version": version}
    )


def more(snapshot: StateSnapshot) -> str:
    return END if snapshot.extra["version"] >= ROUNDS else "draft"


app = (
    GraphBuilder()
    .add_node("draft", draft)
    .add_edge(START, "draft")
    .add_conditional_edges("draft", more, path_map=["draft", END])
    .compile()
)


async def time_travel(folder: Path) -> None:
    async with AppRunner(app, checkpointer=f"sqlite:///{folder / 'tour.db'}") as runner:
        await runner.create_session("essay", VersionedState.with_user_message("write"))
        final = await runner.run_until_complete("essay")
        history = await runner.get_state_history("essay")
        print("essay steps:", [(info.step, list(info.ran_nodes)) for info in history])
        print("essay last:", final.messages[-1].content)

        # Step 2 as it was stored, then a new session from there that takes another course.
        stored = await runner.load_checkpoint("essay", 2)
        print(f"step 2 held version {stored.state.extra['version']}")
        await runner.fork("essay", 2, "essay-formal")
        forked = await runner.run_until_complete("essay-formal")
        fork_history = await runner.get_state_history("essay-formal")
        print("fork steps:", [info.step for info in fork_history])
        print("fork last:", forked.messages[-1].content)
        print("essay untouched:", (await runner.get_state_history("essay"))[-1].step)


async def durability_modes(folder: Path) -> None:
    for durability in ("sync", "async", "exit"):
        url = f"sqlite:///{folder / f'{durability}.db'}"
        async with AppRunner(app, checkpointer=url, durability=durability) as runner:
            await runner.create_session("s", VersionedState.with_user_message("go"))
            await runner.run_until_complete("s")
        # Reopened: what a new process would find.
        async with AppRunner(app, checkpointer=url) as runner:
            steps = [info.step for info in await runner.get_state_history("s")]
        print(f"durability={durability}: stored steps {steps}")


async def damaged_json_store(folder: Path) -> None:
    url = f"json:///{folder / 'json-store'}"
    async with AppRunner(app, checkpointer=url) as runner:
        await runner.create_session("notes", VersionedState.with_user_message("go"))
        await runner.run_until_complete("notes")
    # Damage the newest step's file, as a full disk or a careless editor might.
    newest = folder / "json-store" / "notes" / f"{ROUNDS:012d}.json"
    newest.write_text(newest.read_text()[:40])

    store = JSONCheckpointer(folder / "json-store")
    async with AppRunner(app, checkpointer=store) as runner:
        # Opening reads no step file; resuming finds the damage, reports it and sets the file
        # aside (renamed beside it, never deleted), then goes on from the newest intact step.
        resumed = await runner.create_session("notes")
        for corrupt in store.corrupt_files():
            print(f"reported: {corrupt.path.relative_to(folder)} ({corrupt.reason.split(':')[0]})")
        print("resumed from:", resumed)
        final = await runner.run_until_complete("notes")
        print("rewritten, last:", final.messages[-1].content)
        print("corrupt files left:", store.corrupt_files())


async def pruning(folder: Path) -> None:
    url = f"sqlite:///{folder / 'prune.db'}"
    clock = MockClock(0)  # each step is stored a minute of mock time after the one before
    async with AppRunner(app, checkpointer=url, clock=clock) as runner:
        for session in ("old", "new"):
            await runner.create_session(session, VersionedState.with_user_message("go"))
            done = False
            while not done:
                clock.advance(60)
                result = await runner.run_step(session)
                assert isinstance(result, Completed)
                done = result.report.completed
        removed = await runner.checkpoints.prune(keep_last=2, session_id="old")
        print(f"prune keep_last=2 on 'old': removed {removed}")
        # Ages are measured back from now_ms: the mock clock's now here (the wall clock by default).
        removed = await runner.checkpoints.prune(
            older_than=datetime.timedelta(minutes=3), now_ms=clock.now_unix_ms()
        )
        print(f"prune older than 3 minutes: removed {removed}")
        for session in ("old", "new"):
            steps = [info.step for info in await runner.get_state_history(session)]
            print(f"{session}: steps {steps}")
        await runner.checkpoints.delete_session("old")
        print("sessions:", await runner.checkpoints.list_sessions())


async def direct_use(folder: Path) -> None:
    # No runner: the store's connection thread runs in a nursery of ours; close it before leaving.
    async with trio.open_nursery() as nursery:
        store = SQLiteCheckpointer(folder / "tour.db")
        await store.open(nursery)
        try:
            print("direct: sessions", await store.list_sessions())
            for info in await store.list_steps("essay-formal"):
                print(f"direct: step {info.step} ran {list(info.ran_nodes)}")
        finally:
            await store.aclose()


async def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        await time_travel(folder)
        await durability_modes(folder)
        await damaged_json_store(folder)
        await pruning(folder)
        await direct_use(folder)


if __name__ == "__main__":
    trio.run(main)
