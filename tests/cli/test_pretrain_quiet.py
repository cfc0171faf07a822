"""``gensis pretrain --quiet``: no progress bar, but the final line and errors still print."""

import os
import subprocess
import sys

TINY = ["--preset", "smoke", "train.threads=1", "train.amp=off", "data.limit=64", "optim.epochs=1",
        "optim.batch_size=32"]


def _gensis(*args):
    env = {k: v for k, v in os.environ.items() if k != "GENSIS_NO_PROGRESS"}  # the option alone must silence
    return subprocess.run([sys.executable, "-m", "gensis.cli.main", *args], capture_output=True, text=True,
                          env={**env, "OMP_NUM_THREADS": "1"})


def test_pretrain_quiet_prints_no_bar_but_final_line_and_errors(tmp_path):
    out = tmp_path / "run"
    r = _gensis("pretrain", "--out", str(out), "--quiet", *TINY)
    assert r.returncode == 0, r.stderr
    assert "it/s" not in r.stderr and "%|" not in r.stderr, r.stderr  # no tqdm bar
    assert r.stdout.strip() == f"pretraining done: {out}"
    again = _gensis("pretrain", "--out", str(out), "--quiet", *TINY)  # a user error is not silenced
    assert again.returncode == 2
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "already holds a finished" in lines[0], again.stderr


def test_the_done_lines_are_printed_once_under_torchrun(tmp_path, monkeypatch, capsys):
    """`torchrun --nproc_per_node 2 gensis pretrain ...` printed 'pretraining done: RUN' twice, once per process
    (likewise `eldm train-ae` and `eldm train`): rank 0 prints a command's result lines, as `bank generate` did."""
    import gensis.api
    import gensis.models.encoder
    from gensis.cli.main import main

    monkeypatch.setattr(gensis.api, "pretrain", lambda *a, **k: tmp_path / "run")
    monkeypatch.setattr(gensis.api, "train_autoencoder", lambda *a, **k: tmp_path / "ae")
    monkeypatch.setattr(gensis.api, "train_eldm", lambda *a, **k: tmp_path / "eldm")
    monkeypatch.setattr(gensis.models.encoder, "check_encoder_run", lambda *a, **k: None)
    (tmp_path / "ae").mkdir()
    (tmp_path / "ae" / "manifest.json").write_text('{"stage": "eldm-ae", "val": {"val_mse": 0.1, "val_psnr": 10}}')
    commands = [["pretrain", "--out", "x"], ["eldm", "train-ae", "--out", "x"],
                ["eldm", "train", "--encoder", "e", "--data", "d", "--out", "x"]]
    for rank, lines in (("0", 1), ("1", 0)):
        monkeypatch.setenv("RANK", rank)
        for argv in commands:
            assert main([*argv, "--preset", "smoke"]) == 0
            assert len(capsys.readouterr().out.splitlines()) == lines, (rank, argv)


def test_a_verdict_every_rank_reaches_is_printed_once_under_torchrun(tmp_path, monkeypatch, capsys):
    """`torchrun --nproc_per_node 2 -m gensis pretrain ... optim.epochs=0` printed the same error line once per
    process (likewise a batch larger than the data, or not divisible by the processes): rank 0 prints it."""
    import numpy as np

    from gensis.cli.main import main

    np.savez(tmp_path / "d.npz", images=np.zeros((10, 8, 8, 3), np.uint8))
    cases = [["optim.epochs=0"], ["optim.batch_size=64"], ["--method", "simclr", "optim.batch_size=1"]]
    for rank, lines in (("0", 1), ("1", 0)):
        monkeypatch.setenv("RANK", rank)
        for extra in cases:
            rc = main(["pretrain", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / f"r{rank}"), "--preset",
                       "smoke", "--quiet", "model.depth=1", *extra])
            err = capsys.readouterr().err
            assert rc == 2 and err.count("gensis: error:") == lines, (rank, extra, err)
