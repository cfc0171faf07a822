"""Under torchrun, Ctrl-C stopped rank 0 first (one line, "gensis: interrupted; ..."), and rank 1, waiting in a
gloo collective, printed a ``RuntimeError: ... Connection closed by peer`` traceback: a collective's error after
another rank left its message in the store is now that message, one line (``PeerFailed``)."""

import gensis.api
import gensis.distributed as gd
from gensis.cli.main import main


class _Store:
    def __init__(self, msg):
        self.msg = msg

    def check(self, keys):  # a peer's message; not printed by rank 0 itself (gd.PRINTED_KEY)
        return self.msg is not None and keys == [gd.FAILED_KEY]

    def get(self, key):
        return self.msg.encode()

    def set(self, key, value):
        raise AssertionError("this rank's own failure must not replace the peer's message")


def _setup(monkeypatch, msg):
    monkeypatch.setattr(gd, "_initialized", lambda: True)
    monkeypatch.setattr(gd, "_store", lambda: _Store(msg))
    monkeypatch.setattr(gd.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(gd, "abort", lambda: None)
    monkeypatch.setenv("RANK", "1")

    def collective_fails(*a, **k):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:46806")

    monkeypatch.setattr(gensis.api, "pretrain", collective_fails)


def test_a_collective_error_after_a_peer_stopped_is_its_line(monkeypatch, capsys):
    _setup(monkeypatch, "process 0 failed: KeyboardInterrupt: ")
    assert main(["pretrain", "--out", "x", "--quiet"]) == 2
    assert capsys.readouterr().err == "gensis: error: stopping process 1: process 0 failed: KeyboardInterrupt: \n"


def test_without_a_peer_message_the_error_is_this_ranks_own(monkeypatch):
    import pytest

    _setup(monkeypatch, None)
    monkeypatch.setattr(gd, "report_failure", lambda e: None)
    with pytest.raises(RuntimeError, match="Connection closed by peer"):
        main(["pretrain", "--out", "x", "--quiet"])
