"""Pid markers (temporary names, staging folders, folder locks) record the host: a pid recorded on another host
(a folder on a network filesystem) is never checked here, so its files are left and its lock is not taken over."""

import json
import os
import subprocess
import sys
import time

import pytest

from gensis import owner, rundir
from gensis.errors import UserError
from gensis.owner import Writer, host_tag
from gensis.rundir import RunLock, is_temp_name, remove_stale_temp_dirs, remove_stale_temps, temp_path


@pytest.fixture(scope="module")
def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temporary_names_record_pid_and_host(tmp_path):
    name = temp_path(tmp_path / "model.safetensors").name
    assert name.startswith(f".gensis-tmp-model.safetensors.{os.getpid()}@{host_tag(owner.THIS_HOST)}-")
    assert is_temp_name(name)
    m = rundir._TMP_RE.match(name)
    assert m and m["name"] == "model.safetensors"
    assert rundir._writer(m) == Writer(os.getpid(), host_tag(owner.THIS_HOST))


def test_host_tags_are_name_safe_short_and_distinct():
    assert host_tag("node1.example.org") == "node1_example_org"  # no dot: the pid is read before the last one
    long_a, long_b = "n" * 50 + ".a", "n" * 50 + ".b"
    ta, tb = host_tag(long_a), host_tag(long_b)
    assert ta != tb and len(ta) <= 40 and len(tb) <= 40
    assert all(rundir._TMP_RE.match(f".gensis-tmp-x.png.77@{t}-0123abcd.tmp")["pid"] == "77"
               for t in (ta, host_tag("10.0.0.42"), host_tag("a b/c")))


def test_stale_temp_files_and_staging_folders_only_of_this_host(tmp_path, dead_pid, monkeypatch):
    """A dead pid on this host: removed; the same pid recorded on another host: kept (it may be running there); an
    older version's pid-only name: checked on this host, as before."""
    monkeypatch.setattr(owner, "THIS_HOST", "10.0.0.42")  # a dotted numeric name: "10_0_0_42" in temporary names
    here, there = host_tag("10.0.0.42"), "other-node"
    gone = [f".gensis-tmp-ck.safetensors.{dead_pid}@{here}-0123abcd.tmp",
            f".gensis-tmp-ck.safetensors.{dead_pid}-0123abcd.tmp"]  # pid only (older versions)
    kept = [f".gensis-tmp-ck.safetensors.{dead_pid}@{there}-0123abcd.tmp",
            f".gensis-tmp-ck.safetensors.{os.getpid()}@{there}-0123abcd.tmp"]  # our pid number, another machine's
    for n in gone + kept:
        (tmp_path / n).write_bytes(b"x")
    assert sorted(p.name for p in remove_stale_temps(tmp_path)) == sorted(gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    for n in kept:
        (tmp_path / n).unlink()
    dirs = {n: tmp_path / n for n in (f".gensis-tmp-vit.{dead_pid}@{here}-0123abcd.tmp",
                                      f".gensis-tmp-vit.{dead_pid}@{there}-0123abcd.tmp")}
    for d in dirs.values():
        d.mkdir()
        (d / "config.json").write_text("{}")
    assert [p.name for p in remove_stale_temp_dirs(tmp_path)] == [f".gensis-tmp-vit.{dead_pid}@{here}-0123abcd.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == [f".gensis-tmp-vit.{dead_pid}@{there}-0123abcd.tmp"]


def test_a_lock_of_another_host_is_refused_naming_folder_and_host(tmp_path, dead_pid):
    lock = tmp_path / rundir.LOCK_NAME
    lock.write_text(json.dumps({"pid": dead_pid, "host": "other-node", "start": None}))
    with pytest.raises(UserError) as e:
        RunLock(tmp_path).acquire()
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and f"pid {dead_pid} on other-node, another host" in msg, msg
    assert json.loads(lock.read_text())["host"] == "other-node"  # left as it was
    lock.write_text(json.dumps({"pid": dead_pid, "host": owner.THIS_HOST, "start": None}))
    RunLock(tmp_path).acquire().release()  # the same dead pid on this host: stale, taken over
    assert not lock.exists()


def test_a_long_final_name_gets_a_temporary_name_that_fits(tmp_path):
    """The pid and host make the temporary name longer than the final one: a final name near the 255-byte limit
    still gets one (its start kept), and the write succeeds."""
    from gensis.rundir import atomic_write_text

    final = tmp_path / ("s" * 240 + "é.h5")  # 245 bytes in UTF-8
    name = temp_path(final).name
    assert len(os.fsencode(name)) <= 255 and is_temp_name(name) and name.startswith(".gensis-tmp-sss")
    atomic_write_text(final, "x")
    assert [p.name for p in tmp_path.iterdir()] == [final.name] and final.read_text() == "x"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_a_zombie_writer_is_gone_and_its_temporary_file_removed(tmp_path):
    """A writer that ended but was not reaped (an orphaned tiling worker where the container's init reaps none)
    still answered os.kill(pid, 0): its temporary file was kept as a live process's, left after the rerun."""
    pid = os.fork()
    if pid == 0:  # the child ends at once; not waited for yet: a zombie
        os._exit(0)
    try:
        for _ in range(200):
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        left = tmp_path / f".gensis-tmp-s1.png.{pid}@{host_tag(owner.THIS_HOST)}-0123abcd.tmp"
        left.write_bytes(b"half")
        assert not owner.pid_alive(pid) and Writer(pid, owner.THIS_HOST).state() == "gone"
        assert remove_stale_temps(tmp_path) == [left] and not left.exists()
        assert owner.pid_alive(os.getpid())
    finally:
        os.waitpid(pid, 0)
