"""Under ``torchrun`` an error that every rank meets on the same inputs (a config value the model or the data
refuses, a missing input run, a ``--resume`` the run folder refuses) is printed once, by rank 0, and the job
stops with a non-zero status. A command torchrun does not split (all but pretrain, eldm train-ae, eldm train and
bank generate) is refused so, before any work: it ran whole in every process, each printing its results and
writing the same files. Each of these was printed once per process (twice with 2 processes, sometimes the
two lines run together into one): only the preset/override checks of ``pretrain`` were marked as every rank's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gensis.cli.main import main

ENV = {**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
VIT = ["--preset", "smoke", "--quiet", "train.threads=1", "data.image_size=16", "model.patch_size=4",
       "model.embed_dim=32", "model.depth=1", "model.num_heads=2", "optim.batch_size=16", "optim.epochs=1",
       "aug.local_size=8"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 255, (40, 16, 16), dtype=np.uint8), labels=np.arange(40) % 4)
    return path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _case(name: str, npz: Path, tmp: Path) -> tuple[list[str], str]:
    """(CLI arguments after ``gensis``, the expected error line's start) of each case."""
    if name == "model-config":  # checked once the method's ViT is built (loop.claim_and_build)
        return ["pretrain", "--data", str(npz), "--out", str(tmp / "r"), *VIT, "aug.local_size=14"], \
            "aug.local_size=14 is not a multiple of the ViT's patch size 4"
    if name == "missing-bank":  # an input opened by every rank
        return ["pretrain", "--data", str(npz), "--bank", str(tmp / "nobank"), "--out", str(tmp / "r"), *VIT], \
            "bank not found"
    if name == "eldm-config":  # eldm_config, outside pretrain's own check
        return ["eldm", "train-ae", "--data", str(npz), "--out", str(tmp / "r"), "ae.optim.epochs=0"], \
            "ae.optim.epochs=0: must be an integer >= 1"
    if name == "missing-eldm":  # the command line's input checks, before the process group exists
        return ["bank", "generate", "--eldm", str(tmp / "noeldm"), "--data", str(npz), "--out", str(tmp / "b")], \
            f"E-LDM run {tmp / 'noeldm'} not found"
    if name == "foreign-out":  # rank 0's verdict on the folder: the other rank stops quietly
        (tmp / "notes").mkdir()
        (tmp / "notes" / "todo.txt").write_text("mine")
        return ["pretrain", "--data", str(npz), "--out", str(tmp / "notes"), *VIT], \
            f"{tmp / 'notes'} is not empty and not a gensis run folder"
    if name == "one-process-command":  # a command torchrun does not split: it would run whole in each process
        return ["eval", "knn", "--encoder", "pixels", "--train", f"{npz}@train", "--test", f"{npz}@val"], \
            "gensis eval knn runs as one process, and torchrun started 2: run it without torchrun"
    assert name == "resume-other-world"  # the run folder's verdict (loop.fit), after the process group exists
    run = tmp / "one"
    assert main(["pretrain", "--data", str(npz), "--out", str(run), *VIT]) == 0
    return ["pretrain", "--data", str(npz), "--out", str(run), *VIT, "--resume"], \
        f"{run}/checkpoint.safetensors was written by 1 process(es); resume with the same number (now 2)"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model-config", "missing-bank", "eldm-config", "missing-eldm",
                                  "resume-other-world", "one-process-command", "foreign-out"])
def test_an_error_every_rank_meets_is_one_line(name, npz, tmp_path):
    args, start = _case(name, npz, tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_port()}", "-m", "gensis.cli.main", *args]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert out.count("gensis: error:") == 1, out[-3000:]
    line = next(l for l in out.splitlines() if "gensis: error:" in l)
    assert line.startswith(f"gensis: error: {start}"), line
    assert "stopping process" not in out


@pytest.mark.parametrize("rank", ["0", "1"])
@pytest.mark.parametrize("argv", [["eval", "knn", "--encoder", "pixels"], ["mil", "train", "--feats", "F", "--labels", "L", "--out", "O"], ["demo"],
                                  ["bank", "verify", "B"]])
def test_a_command_torchrun_does_not_split_is_refused_once(argv, rank, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("gensis.cli.main.QUIET_RANK_GRACE_S", 0.0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.chdir(tmp_path)  # should one run, its files go there
    assert main([*argv, "--out", str(tmp_path / "x")] if argv == ["demo"] else argv) == 2
    err = capsys.readouterr().err
    name = " ".join(["gensis", *argv[:2]]) if argv[0] != "demo" else "gensis demo"
    assert err == ("" if rank == "1" else f"gensis: error: {name} runs as one process, and torchrun started 2: run "
                   "it without torchrun (torchrun splits the work of pretrain, eldm train-ae, eldm train and bank "
                   "generate)\n")


@pytest.mark.parametrize("rank", ["0", "1"])
def test_the_commands_torchrun_splits_are_not_refused(rank, monkeypatch, capsys, tmp_path):
    """... and their --print-config prints the config once, from rank 0 (it was printed by every process)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.chdir(tmp_path)
    for argv in (["pretrain"], ["eldm", "train-ae"], ["eldm", "train", "--encoder", "E"], ["bank", "generate"]):
        assert main([*argv, "--out", "x", "--print-config"]) == 0
        out, err = capsys.readouterr()
        assert "runs as one process" not in err
        assert ("seed:" in out) == (rank == "0"), out[:200]


SLOW_RANK_0 = """
import argparse, os, sys, time
from unittest import mock
from gensis.cli.main import main
from gensis.errors import UserError


def work(args):
    if os.environ["RANK"] == "0":
        time.sleep(2.0)  # rank 0 reaches the verdict last
    e = UserError("a verdict every rank reaches")
    e.all_ranks = True
    raise e


ns = argparse.Namespace(verb="x", func=work, several_processes=True)
with mock.patch("argparse.ArgumentParser.parse_known_args", return_value=(ns, [])):
    sys.exit(main([]))
"""


def test_a_verdict_rank_0_reaches_last_is_still_printed(tmp_path):
    """Rank 1, silent on an error rank 0 prints, exited at once: torchrun then ended rank 0 before it printed
    the line, and the job failed without one (seen with a bad config value under load)."""
    script = tmp_path / "job.py"
    script.write_text(SLOW_RANK_0)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_port()}", str(script)]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert out.count("gensis: error: a verdict every rank reaches") == 1, out[-3000:]
