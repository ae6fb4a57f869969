"""The PostgreSQL server restarts under a running session (``pg_ctlcluster … restart``, for real):
the step being saved fails with ``CheckpointBackendError`` and is not applied, the next call
reconnects and re-runs it, the lease is taken again, and the stored history has no gap.

This is the only test that restarts the server (marker ``pg_restart``); it leaves it running.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
import trio
from apps import counter_app

from treadle import AppRunner, CheckpointBackendError, SessionLeased, VersionedState
from treadle.runtime.checkpointers import PostgresCheckpointer

pytest_plugins = ["pg_fixtures"]

CLUSTER = ["15", "main"]


def cluster_online() -> bool:
    found = subprocess.run(["pg_lsclusters", "-h", *CLUSTER], capture_output=True, text=True)
    return " online" in found.stdout


def restart_server() -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *CLUSTER, "restart"],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def server_left_running() -> Any:
    yield
    if not cluster_online():
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", *CLUSTER, "start"], timeout=60
        )
    deadline = time.monotonic() + 30
    while not cluster_online() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster_online()


@pytest.mark.postgres
@pytest.mark.pg_restart
async def test_a_server_restart_fails_one_step_and_the_next_call_reconnects(
    postgres_url: str, pg_schema: str, server_left_running: None
) -> None:
    app = counter_app(limit=8, pause=0)

    def store() -> PostgresCheckpointer:
        # A long lease: no heartbeat touches the connection between the restart and the step.
        return PostgresCheckpointer(postgres_url, schema=pg_schema, lease_ttl=600)

    with trio.fail_after(90):
        async with AppRunner(app, checkpointer=store()) as runner:
            await runner.create_session("s", VersionedState(extra={"n": 0}))
            for _ in range(3):
                await runner.run_step("s")
            await trio.to_thread.run_sync(restart_server)
            with pytest.raises(CheckpointBackendError) as info:
                await runner.run_step("s")
            assert (info.value.session_id, info.value.step) == ("s", 4)
            view = await runner.get_session("s")
            assert (view.step, view.state.extra["n"]) == (3, 3)  # not applied
            # The next call reconnects (and takes the lease again) and re-runs step 4.
            report = await runner.run_step("s")
            assert report.report is not None
            assert report.report.step == 4
            final = await runner.run_until_complete("s")
            assert final.extra["n"] == 8
            history = await runner.get_state_history("s")
            assert [i.step for i in history] == list(range(9))
            for step in range(1, 9):
                assert (await runner.load_checkpoint("s", step)).state.extra["n"] == step
            async with AppRunner(app, checkpointer=store()) as other:
                with pytest.raises(SessionLeased):
                    await other.create_session("s")
