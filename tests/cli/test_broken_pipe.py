"""`gensis ... | head`: when the reader of stdout goes away, gensis stops quietly (no traceback)."""

import os
import subprocess
import sys

import numpy as np


def test_closed_stdout_is_not_a_traceback(tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, images=np.arange(20 * 64, dtype=np.uint8).reshape(20, 8, 8), labels=np.arange(20) % 2)
    r, w = os.pipe()
    os.close(r)  # nobody reads: writing the table fails with EPIPE
    p = subprocess.run([sys.executable, "-m", "gensis.cli.main", "eval", "knn", "--encoder", "pixels", "--train",
                        str(data), "--k", "1", "--cache", "none", "--json", str(tmp_path / "r.json")], stdout=w,
                       stderr=subprocess.PIPE, text=True, env={**os.environ, "GENSIS_NO_PROGRESS": "1"})
    os.close(w)
    assert "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr, p.stderr
    assert p.returncode == 141
    assert (tmp_path / "r.json").is_file()  # the results file does not depend on the table's reader
