"""Two real gloo processes (spawned with env:// rendezvous, no torchrun agent to kill anyone): the process group
and its threads are gone after ``cleanup`` even when timm is imported after ``init_process_group`` (the cause
of the "terminate called without an active exception" abort), and a failure in one rank stops the other at its
next wait within seconds, with one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")

TEARDOWN = textwrap.dedent("""
    import glob, sys
    from gensis.distributed import barrier, cleanup, init_distributed
    info = init_distributed("cpu")
    import timm  # imports torch.distributed.nn.functional, whose defaults are `group=group.WORLD`
    barrier()
    cleanup()
    names = sorted(open(t).read().strip() for t in glob.glob("/proc/self/task/*/comm"))
    print("threads after cleanup:", names)
    sys.exit(1 if any("gloo" in n for n in names) else 0)
""")

LAST_IS_HOST = textwrap.dedent("""
    import sys, time
    from gensis.distributed import cleanup, init_distributed
    info = init_distributed("cpu")
    if info.rank == 0:
        time.sleep(1.0)  # rank 1 is already polling the store when rank 0, its host, completes the barrier
    cleanup()
    print("clean exit", flush=True)
""")

FAIL = textwrap.dedent("""
    import sys, time
    from gensis.cli.main import main
    from gensis.distributed import barrier, init_distributed
    from gensis.errors import UserError

    def work(args):
        info = init_distributed("cpu")
        barrier()
        if info.rank == int(sys.argv[1]):
            time.sleep(0.5)
            e = UserError("injected failure")
            e.all_ranks = len(sys.argv) > 2  # marked as every rank's verdict, but only this rank meets it
            raise e
        time.sleep(0.2)
        barrier()  # the failed rank never arrives
        return 0

    import argparse
    from unittest import mock
    ns = argparse.Namespace(verb="x", func=work, several_processes=True)
    with mock.patch("argparse.ArgumentParser.parse_known_args", return_value=(ns, [])):
        sys.exit(main([]))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(tmp_path: Path, script: str, args: list[str]) -> list[subprocess.Popen]:
    path = tmp_path / "job.py"
    path.write_text(script)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "GENSIS_DIST_TIMEOUT": "600"}
        procs.append(subprocess.Popen([sys.executable, str(path), *args], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def test_no_gloo_thread_outlives_cleanup(tmp_path):
    procs = _spawn(tmp_path, TEARDOWN, [])
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err[-2000:]
        assert "threads after cleanup:" in out


def test_rank0_last_at_cleanup_does_not_take_the_store_from_a_polling_peer(tmp_path):
    """Rank 0 hosts the store without torchrun's agent; reaching cleanup's barrier last, it must not exit
    (and take the store with it) before the peer that polls the barrier has seen it complete."""
    procs = _spawn(tmp_path, LAST_IS_HOST, [])
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "clean exit" in out, out + err[-2000:]


@pytest.mark.parametrize("failing", [1, 0])  # 0 also hosts the store: the survivor must notice it is gone
def test_a_failed_rank_stops_the_other_within_seconds(tmp_path, failing):
    procs = _spawn(tmp_path, FAIL, [str(failing)])
    bad, good = procs[failing], procs[1 - failing]
    _, err_bad = bad.communicate(timeout=240)
    t_bad = time.time()
    _, err_good = good.communicate(timeout=60)  # a hang would take the 600 s collective timeout
    waited = time.time() - t_bad
    assert bad.returncode == 2 and good.returncode == 2
    assert err_bad.strip().splitlines() == ["gensis: error: injected failure"]
    lines = err_good.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gensis: error: stopping process {1 - failing}: "), err_good
    if failing == 1:
        assert lines[0].endswith("process 1 failed: injected failure")
    else:  # the store went away with rank 0, or rank 0 wrote its message first
        assert "injected failure" in lines[0] or "another process has ended" in lines[0]
    assert waited < 20, f"the surviving rank needed {waited:.1f} s to stop"


def test_an_every_rank_error_met_by_one_other_rank_alone_still_reaches_rank_0(tmp_path):
    """An error marked ``all_ranks`` (rank 0 alone prints it) that only rank 1 meets: rank 1 prints nothing, and
    rank 0 stops at its next wait with rank 1's line, instead of waiting there without a word (the line lost)."""
    procs = _spawn(tmp_path, FAIL, ["1", "all_ranks"])
    bad, good = procs[1], procs[0]
    _, err_bad = bad.communicate(timeout=240)
    _, err_good = good.communicate(timeout=60)  # a hang would take the 600 s collective timeout
    assert bad.returncode == 2 and good.returncode == 2
    assert err_bad.strip() == ""
    assert err_good.strip().splitlines() == ["gensis: error: stopping process 0: process 1 failed: injected failure"]


def test_rank_0s_own_verdict_stops_the_others_without_a_second_line(tmp_path):
    """An ``all_ranks`` error that rank 0 alone meets (its verdict on the run folder): rank 0 prints it, and the
    other rank stops at its next wait within seconds, quietly (it printed 'stopping process 1: ...' again, or,
    without a report, waited for the job to be ended)."""
    procs = _spawn(tmp_path, FAIL, ["0", "all_ranks"])
    bad, good = procs[0], procs[1]
    _, err_bad = bad.communicate(timeout=240)
    t_bad = time.time()
    _, err_good = good.communicate(timeout=60)
    assert bad.returncode == 2 and good.returncode == 2
    assert err_bad.strip().splitlines() == ["gensis: error: injected failure"]
    assert err_good.strip() == ""
    assert time.time() - t_bad < 20
