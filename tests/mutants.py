"""Break the code on purpose, one line at a time, and check that the tests notice.

Each mutant below is a one-line change to treadle that a named claim forbids, with the tests that
should go red. For each one the script copies the working tree to a temporary directory, applies
the change there (your checkout is never touched), and runs the tests against the copy::

    python tests/mutants.py               # every mutant, against its own tests
    python tests/mutants.py join-state    # the mutants whose name contains "join-state"
    python tests/mutants.py --full NAME   # against the whole default suite instead
    python tests/mutants.py NAME --tests tests/test_x.py   # against chosen tests
    python tests/mutants.py --list

A mutant is *killed* when the tests fail, *survives* when they pass (a hole in the suite: add a
test), and is *stale* when its line no longer exists (update it here). Exit status: 0 when every
mutant run was killed. See docs/testing.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
FIELDS_TEST = "tests/test_checkpoint_fields.py"
CRASH_TEST = "tests/test_checkpoint_crash.py"
CANCEL_TEST = "tests/test_cancel_resume.py"


@attrs.frozen
class Mutant:
    name: str
    path: str
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]
    claim: str


def _from_checkpoint(field: str, old: str, new: str) -> Mutant:
    return Mutant(
        f"resume-{field}",
        "runtime/execution/scheduler.py",
        old,
        new,
        (FIELDS_TEST,),
        f"a resumed session carries the checkpoint's {field}",
    )


def _decode(field: str, old: str, new: str) -> Mutant:
    return Mutant(
        f"decode-{field}",
        "runtime/checkpointers/codec.py",
        old,
        new,
        (FIELDS_TEST,),
        f"a durable store gives back the {field} it was given",
    )


MUTANTS: tuple[Mutant, ...] = (
    # The two that survived every test before the rich graph and the step-cost test existed.
    Mutant(
        "resume-join-state-empty",
        "runtime/execution/scheduler.py",
        "join_state={k: tuple(v) for k, v in cp.join_state.items()},",
        "join_state={},",
        (FIELDS_TEST, CRASH_TEST),
        "a join half-fired before a resume fires after it",
    ),
    Mutant(
        "barrier-refreezes-extra",
        "runtime/execution/barrier.py",
        "    return current.updated(changes)\n",
        "    return frozen_extra(dict(current.updated(changes)))\n",
        ("tests/test_step_cost.py",),
        "a step's work follows its writes, not the size of the state",
    ),
    Mutant(
        "barrier-copies-messages",
        "runtime/execution/barrier.py",
        "        return current.extended(update)\n",
        "        return Log((*current, *update))\n",
        ("tests/test_step_cost.py",),
        "a step's work follows its writes, not the size of the state",
    ),
    Mutant(
        "codec-compares-whole-history",
        "runtime/checkpointers/codec.py",
        "        return new.since(old)\n",
        "        return new.since(tuple(old))\n",
        ("tests/test_step_cost.py",),
        "encoding a step follows its writes, not the size of the state",
    ),
    # SessionCore.from_checkpoint: one field of the resume at a time.
    _from_checkpoint(
        "session_id", "session_id=cp.session_id,", 'session_id=cp.session_id + "-resumed",'
    ),
    _from_checkpoint("step", "step=cp.step,", "step=max(0, cp.step - 1),"),
    _from_checkpoint("state", "state=cp.state,", "state=VersionedState(),"),
    _from_checkpoint(
        "frontier", "frontier=tuple(cp.frontier),", "frontier=tuple(cp.frontier)[:1],"
    ),
    _from_checkpoint(
        "versions_seen",
        "versions_seen=frozen_versions_seen(cp.versions_seen),",
        "versions_seen=FrozenMap(),",
    ),
    _from_checkpoint(
        "concurrency_limit",
        "concurrency_limit=cp.concurrency_limit,",
        "concurrency_limit=cp.concurrency_limit + 1,",
    ),
    # StepCodec.decode (SQLite, PostgreSQL and JSON read through it): one field at a time.
    _decode("session_id", "session_id=row.session_id,", 'session_id=row.session_id + "x",'),
    _decode("step", "                step=row.step,\n", "                step=row.step + 1,\n"),
    _decode("state-versions", '"versions": body["versions"],', '"versions": {},'),
    _decode("frontier", 'frontier=body["frontier"],', 'frontier=body["frontier"][:1],'),
    _decode(
        "versions_seen",
        "versions_seen=frozen_versions_seen(seen),",
        "versions_seen=FrozenMap(),",
    ),
    _decode("join_state", 'join_state=body["join_state"],', "join_state={},"),
    _decode(
        "concurrency_limit",
        'concurrency_limit=body["concurrency_limit"],',
        'concurrency_limit=body["concurrency_limit"] + 1,',
    ),
    _decode("created_at", "created_at=row.created_at,", "created_at=0,"),
    _decode("ran_nodes", "ran_nodes=row.ran_nodes,", "ran_nodes=(),"),
    _decode("skipped_nodes", "skipped_nodes=row.skipped_nodes,", "skipped_nodes=(),"),
    _decode("updated_channels", "updated_channels=row.updated_channels,", "updated_channels=(),"),
    _decode("graph_hash", 'graph_hash=body.get("graph_hash"),', "graph_hash=None,"),
    # Scheduling, routing and merging.
    Mutant(
        "delta-drops-versions_seen",
        "runtime/checkpointers/codec.py",
        'seen.update(body["versions_seen_set"])',
        "seen.update({})",
        ("tests/test_checkpoint_storage.py", FIELDS_TEST),
        "a step rebuilt from deltas has every versions_seen entry its steps set",
    ),
    Mutant(
        "release-keeps-session-locks",
        "runtime/checkpointers/postgres.py",
        '"SELECT count(pg_advisory_unlock(key::bigint)) "',
        '"SELECT count(key::bigint) "',
        ("tests/test_checkpoint_postgres.py",),
        "a lease given up frees its session for another process at once",
    ),
    Mutant(
        "failed-take-keeps-session-lock",
        "runtime/checkpointers/postgres.py",
        "await self._drop_locks_here(conn, self._drop_lock, params, grace)",
        "pass",
        ("tests/test_checkpoint_postgres.py",),
        "a lease take that fails or is cancelled leaves the session free for other processes",
    ),
    Mutant(
        "unopened-session-keeps-lease",
        "runtime/execution/runner.py",
        "                await self._drop_unopened(session_id)\n",
        "                pass\n",
        ("tests/test_checkpoint_postgres.py",),
        "a session that fails to open, or whose opening is cancelled, gives its lease up",
    ),
    Mutant(
        "unforked-session-keeps-lease",
        "runtime/execution/runner.py",
        "await self._drop_unopened(new_session_id)",
        "pass",
        ("tests/test_checkpoint_postgres.py",),
        "the same, for a fork",
    ),
    Mutant(
        "fork-ignores-opening",
        "runtime/execution/runner.py",
        "await self._settled(new_session_id)",
        "pass",
        ("tests/test_checkpoint_postgres.py",),
        "a fork onto a session being opened waits for it, and leaves its lease alone",
    ),
    Mutant(
        "cancelled-retire-keeps-lease",
        "runtime/execution/runner.py",
        "with trio.move_on_after(_RELEASE_GRACE, shield=True):",
        "with trio.move_on_after(_RELEASE_GRACE):",
        ("tests/test_checkpoint_postgres.py",),
        "a close_session cut short while giving up the lease gives it up all the same",
    ),
    Mutant(
        "cancelled-release-keeps-session-locks",
        "runtime/checkpointers/postgres.py",
        "self._drop_locks, params, grace)\n                raise",
        "self._drop_locks, params, grace) if False else None\n                raise",
        ("tests/test_checkpoint_postgres.py",),
        "a lease release cancelled before its statement is sent still frees the sessions",
    ),
    Mutant(
        "cancelled-thread-release-keeps-session-locks",
        "runtime/checkpointers/postgres.py",
        "await self._drop_locks_after(thread, mine)",
        "pass",
        ("tests/test_checkpoint_postgres.py",),
        "the same, for a release given up in the connection thread",
    ),
    Mutant(
        "gating-off",
        "runtime/execution/scheduler.py",
        "if node in (END, START) or core.versions_seen.get(node) == versions:",
        "if node in (END, START):",
        (FIELDS_TEST, "tests/test_runtime_steps.py"),
        "a node whose inputs did not change since it last ran is skipped",
    ),
    Mutant(
        "join-never-resets",
        "runtime/execution/frontier.py",
        "        seen.clear()\n        return True",
        "        return True",
        (FIELDS_TEST, "tests/test_runtime_steps.py"),
        "a join fires once per round of its sources",
    ),
    Mutant(
        "frontier-keeps-duplicates",
        "runtime/execution/frontier.py",
        "            if target in seen:\n                continue\n",
        "",
        ("tests/test_runtime_steps.py", "tests/test_determinism.py"),
        "the next frontier holds each node once, first occurrence first",
    ),
    Mutant(
        "extra-version-always-rises",
        "runtime/execution/barrier.py",
        "state.extra_version + (extra is not state.extra),",
        "state.extra_version + 1,",
        ("tests/test_state_barrier.py",),
        "a channel's version rises only when its value changed",
    ),
    Mutant(
        "extra-delete-keeps-none",
        "runtime/execution/barrier.py",
        "                changes[key] = DELETED\n",
        "                changes[key] = None\n",
        ("tests/test_state_barrier.py",),
        "writing None to an extra key deletes it",
    ),
    Mutant(
        "merge-in-arrival-order",
        "runtime/execution/scheduler.py",
        "                results[done.index] = done.partial\n",
        "                results[sum(p is not _EMPTY for p in results)] = done.partial\n",
        ("tests/test_determinism.py",),
        "partials merge in frontier order, never arrival order",
    ),
    Mutant(
        "shutdown-skips-flush",
        "runtime/execution/runner.py",
        "            if not self._checkpoints.volatile:\n                await self._checkpoints.flush()\n"
        "                await self._checkpoints.release_leases(",
        "            if False:\n                await self._checkpoints.flush()\n"
        "                await self._checkpoints.release_leases(",
        (CANCEL_TEST,),
        "leaving a runner stores every step it acknowledged",
    ),
    Mutant(
        "step-applied-before-stored",
        "runtime/execution/scheduler.py",
        "        config = self.config\n        if config.checkpoints is not None and config.autosave:",
        "        config = self.config\n"
        "        core = self.core\n"
        "        core.step, core.state, core.frontier = after.step, after.state, after.frontier\n"
        "        core.versions_seen, core.join_state = after.versions_seen, after.join_state\n"
        "        if config.checkpoints is not None and config.autosave:",
        ("tests/test_checkpoint_failed_saves.py", CANCEL_TEST),
        "a step is applied to the session only once it is stored",
    ),
    Mutant(
        "abandoned-step-advances",
        "runtime/execution/scheduler.py",
        "            except trio.Cancelled:\n                # Abandoned mid-step",
        "            except trio.Cancelled:\n                self.core.step = step\n"
        "                # Abandoned mid-step",
        (CANCEL_TEST,),
        "a step abandoned by its caller leaves no trace",
    ),
)


def copy_tree(destination: Path) -> Path:
    """The working tree (with uncommitted changes) as ``destination/treadle``."""
    target = destination / "treadle"
    shutil.copytree(
        ROOT,
        target,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache"
        ),
    )
    return target


def apply(mutant: Mutant, tree: Path) -> bool:
    path = tree / mutant.path
    text = path.read_text(encoding="utf-8")
    if text.count(mutant.old) != 1:
        return False
    path.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")
    return True


def run(
    mutant: Mutant, *, full: bool, timeout: float, tests: tuple[str, ...] = ()
) -> tuple[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        tree = copy_tree(Path(tmp))
        if not apply(mutant, tree):
            return "stale", 0.0
        # The copy comes first on the path, ahead of the editable install of the checkout.
        env = {**os.environ, "PYTHONPATH": tmp, "PYTHONDONTWRITEBYTECODE": "1"}
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
        command += [] if full else list(tests or mutant.tests)
        started = time.monotonic()
        try:
            done = subprocess.run(
                command,
                cwd=tree,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return "killed (timeout)", time.monotonic() - started
        took = time.monotonic() - started
        verdict = {0: "SURVIVED", 1: "killed"}.get(done.returncode, f"error {done.returncode}")
        return verdict, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", help="run only mutants whose name contains one of these"
    )
    parser.add_argument("--full", action="store_true", help="run the whole suite for each mutant")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--tests", nargs="+", default=(), help="run these tests instead")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.names or any(n in m.name for n in args.names)]
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name:32} {mutant.path:34} {mutant.claim}")
        return 0
    bad = 0
    for mutant in chosen:
        chosen_tests = tuple(args.tests)
        verdict, took = run(mutant, full=args.full, timeout=args.timeout, tests=chosen_tests)
        bad += not verdict.startswith("killed")
        tests = "the whole suite" if args.full else " ".join(chosen_tests or mutant.tests)
        print(f"{mutant.name:32} {verdict:18} {took:6.1f} s  {tests}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
