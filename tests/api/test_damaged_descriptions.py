"""A run's description file (an E-LDM run's eldm.json, its autoencoder's autoencoder.json) truncated or emptied
(a copy cut short, a hand edit) is one line naming the file, exit 2, never a JSONDecodeError traceback."""

from __future__ import annotations

import shutil

import pytest

from gensis.cli.main import main


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("gensis: error:"), err
    return err[0]


@pytest.mark.parametrize("damage", ['{"encoder": ', "", "[]"])
def test_a_damaged_eldm_json_is_named_by_every_command_that_reads_it(tmp_path, vq_eldm_run, images_npz, capsys,
                                                                     damage):
    run = tmp_path / "eldm"
    shutil.copytree(vq_eldm_run, run)
    (run / "eldm.json").write_text(damage)
    for argv in (["export", str(run), "--to", "timm", str(tmp_path / "timm")],
                 ["export", str(run), "--to", "diffusers", str(tmp_path / "diffusers")],
                 ["eldm", "sample", "--eldm", str(run), "--data", str(images_npz), "--out", str(tmp_path / "figs"),
                  "--quiet"],
                 ["bank", "generate", "--eldm", str(run), "--data", str(images_npz), "--out", str(tmp_path / "bank"),
                  "--preset", "smoke", "--quiet"]):
        assert main(argv) == 2, argv
        line = _one_line(capsys)
        assert f"{run / 'eldm.json'} is damaged" in line and "E-LDM description" in line, (argv, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eldm"]  # nothing made


def test_a_damaged_autoencoder_json_is_named(tmp_path, vq_eldm_run, images_npz, capsys):
    run = tmp_path / "eldm"
    shutil.copytree(vq_eldm_run, run)
    (ae_json,) = run.glob("*/autoencoder.json")  # the copy of the autoencoder inside the E-LDM run
    ae_json.write_text('{"model": {"block_out')
    assert main(["export", str(run), "--to", "diffusers", str(tmp_path / "diffusers")]) == 2
    line = _one_line(capsys)
    assert f"{ae_json} is damaged" in line and "autoencoder description" in line, line
