"""Assertions shared by CLI tests."""


def one_error_line(err: str) -> str:
    """The single non-empty stderr line of a user error (``gensis: error: ...``), asserting there is only one."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("gensis: error: ")
    return lines[0]


def locker(folder):
    """Another process holding gensis's folder lock on ``folder`` (as a running gensis command would)."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", f"import time; from gensis.rundir import lock_folder; "
                          f"lock_folder({str(folder)!r}); print('locked', flush=True); time.sleep(300)"],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def _files(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".gensis.lock"}


def check_second_run_refused(main, argv, out, new, capsys, monkeypatch, module, attr: str) -> None:
    """A command that locks its ``--out`` (``argv + [out]``): run once (the lock is released when done); with
    another process holding the lock on ``out`` a second run is refused in one line naming that pid (exit 2) and
    ``out`` is unchanged; on ``new``, missing when it starts and locked by another process while it calls
    ``module.attr`` (what it does before it writes), it is refused too and nothing is written beside that lock."""
    assert main([*argv, str(out)]) == 0 and not (out / ".gensis.lock").exists()
    capsys.readouterr()
    before = _files(out)
    first = locker(out)
    try:
        assert main([*argv, str(out)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "in use by another gensis process" in line and f"pid {first.pid}" in line, line
        assert _files(out) == before
    finally:
        first.kill()
        first.wait()
    started, original = [], getattr(module, attr)

    def first_starts_meanwhile(*a, **kw):
        started.append(locker(new))
        return original(*a, **kw)

    monkeypatch.setattr(module, attr, first_starts_meanwhile)
    try:
        assert main([*argv, str(new)]) == 2
        assert "in use by another gensis process" in one_error_line(capsys.readouterr().err)
        assert {p.name for p in new.iterdir()} == {".gensis.lock"}  # nothing written beside the first's lock
    finally:
        monkeypatch.undo()
        for p in started:
            p.kill()
            p.wait()
