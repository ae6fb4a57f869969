"""A big state: each step costs what it writes, and a snapshot never changes.

The session starts with 50,000 messages and 50,000 ``extra`` keys; ``note`` appends one message and
sets one key per step, 100 times, on SQLite. A step does not copy the state: ``messages`` is a log
the session's states share (each a view of its own prefix) and ``extra`` a persistent map, and the
checkpoint of a step stores that step's writes. The first snapshot ``note`` received is kept: after
the run it still reads exactly what it read then.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import trio

from treadle import (
    END,
    START,
    AppRunner,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    SQLiteCheckpointer,
    StateSnapshot,
    VersionedState,
)

SIZE = 50_000
STEPS = 100
kept: list[StateSnapshot] = []


async def note(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    if not kept:
        kept.append(snapshot)
    count = snapshot.extra["count"] + 1
    return NodePartial(
        messages=[Message.assistant(f"note {count}")],
        extra={"count": count, f"note{count}": {"step": ctx.step}},
    )


def more(snapshot: StateSnapshot) -> str:
    return "note" if snapshot.extra["count"] < STEPS else END


app = (
    GraphBuilder()
    .add_node("note", note)
    .add_edge(START, "note")
    .add_conditional_edges("note", more, path_map=["note", END])
    .compile()
)


async def main() -> None:
    initial = VersionedState(
        messages=[Message.user(f"message {i}") for i in range(SIZE)],
        extra={"count": 0, **{f"k{i}": [i, "value"] for i in range(SIZE)}},
    )
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteCheckpointer(Path(folder) / "big.db")
        async with AppRunner(app, checkpointer=store) as runner:
            await runner.create_session("big", initial)
            final = await runner.run_until_complete("big")
            history = await runner.get_state_history("big")
    print(f"final: {len(final.messages)} messages, {len(final.extra)} extra keys")
    print(f"last message: {final.messages[-1].content}")
    print(f"stored steps: {len(history)}")
    first = kept[0]
    print(f"first snapshot: {len(first.messages)} messages, count={first.extra['count']}")
    print(f"messages read like a tuple: {final.messages[:2] == initial.messages[:2]}")
    # extra is a read-only mapping, not a dict: dict() it for json.
    text = json.dumps(dict(final.extra))
    print(f"extra as JSON: {len(json.loads(text))} keys, note100 = {final.extra['note100']}")


if __name__ == "__main__":
    trio.run(main)
