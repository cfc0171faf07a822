"""gensis eval all: runs the configured evaluations, one summary table; registry drives the CLI."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from davis_fixture import make_davis  # noqa: E402
from test_retrieval_copydetect import make_copydays  # noqa: E402

from gensis.cli.main import main  # noqa: E402
from gensis.eval.registry import PROTOCOLS, evaluations  # noqa: E402


def test_every_registered_protocol_is_a_command(capsys):
    assert set(evaluations()) == set(PROTOCOLS)
    for name in PROTOCOLS:
        with pytest.raises(SystemExit) as e:
            main(["eval", name, "--help"])
        assert e.value.code == 0
        assert "--encoder" in capsys.readouterr().out


def test_all_with_config(tmp_path, capsys):
    g = np.random.default_rng(0)
    labels = np.arange(40) % 2
    imgs = (g.random((40, 8, 8)) * 40).astype(np.uint8)
    imgs[labels == 1, :4] = 240
    np.savez(tmp_path / "d.npz", images=imgs, labels=labels)
    davis = make_davis(tmp_path / "DAVIS", sequences=("squares",), frames=4)
    copydays = make_copydays(tmp_path / "copydays", n=3)
    cfg = tmp_path / "evals.yaml"
    cfg.write_text(f"knn: {{train: {tmp_path / 'd.npz'}, k: [1, 3]}}\n"
                   f"davis: {{data: {davis}, size: 48, radius: 3}}\n"
                   f"copydetect: {{data: {copydays}, imsize: 16}}\n")
    js = tmp_path / "all.json"
    assert main(["eval", "all", "--encoder", "pixels", "--config", str(cfg), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "summary" in out and "DAVIS J&F-Mean" in out and "k-NN top-1" in out and "Copydays strong mAP" in out
    res = json.loads(js.read_text())
    assert set(res["results"]) == {"knn", "davis", "copydetect"}
    assert res["results"]["knn"]["top1"] == 100.0


def test_all_writes_a_sections_json(tmp_path, capsys):
    """A section's `json: FILE` was silently ignored (no file); it is written as `gensis eval NAME --json` writes
    it, and checked before any work like the command's (a file of the user's is refused)."""
    np.savez(tmp_path / "d.npz", images=np.zeros((20, 8, 8), np.uint8), labels=np.arange(20) % 2)
    cfg, knn_js = tmp_path / "evals.yaml", tmp_path / "knn.json"
    cfg.write_text(f"knn: {{train: {tmp_path / 'd.npz'}, k: [1], json: {knn_js}}}\n")
    assert main(["eval", "all", "--encoder", "pixels", "--config", str(cfg)]) == 0
    res = json.loads(knn_js.read_text())
    assert res["protocol"] == "knn" and res["results"][0]["k"] == 1 and "gensis_version" in res
    knn_js.write_text('{"mine": 1}')
    assert main(["eval", "all", "--encoder", "pixels", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config section 'knn'" in err[0] and "not a result file" in err[0], err
    assert knn_js.read_text() == '{"mine": 1}'


def test_all_bad_config_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "e.yaml"
    cfg.write_text("knnn: {}\n")
    assert main(["eval", "all", "--encoder", "pixels", "--config", str(cfg)]) == 2
    assert "unknown evaluation 'knnn'" in capsys.readouterr().err
    cfg.write_text(f"davis: {{data: {tmp_path / 'nope'}}}\n")
    assert main(["eval", "all", "--encoder", "pixels", "--config", str(cfg)]) == 2
    cap = capsys.readouterr()
    assert "DAVIS folder not found" in cap.out and "1 of 1 evaluations failed" in cap.err
