"""Kill-and-resume under DDP (2 processes, gloo, torchrun) ends with the weights of an uninterrupted run; a
non-finite loss on one rank stops both with one line.

One parametrized test for every trainer on the shared loop: each rank saves and restores its own random
state (augmentation, Gen- choices, diffusion noise, global generators), so nothing depends on the kill. The Gen-
variants run both ways: pixel interpolation (``--interp pixel``) and a generated bank (``--bank``: generative
views and E-LDM interpolations drawn per rank), the bank made by the fake generator from the test's own .npz.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bank_builders import build_bank
from gensis.checkpoint import load_checkpoint, sub_state
from gensis.rundir import RunDir

ENV = {**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
TINY_VIT = ["--preset", "smoke", "train.threads=1", "train.amp=off", "data.limit=128", "optim.batch_size=32",
            "optim.epochs=3", "model.embed_dim=32", "model.num_heads=2", "model.depth=1"]

TINY_AE = ["eldm", "train-ae", "--preset", "smoke", "--quiet", "train.threads=1", "data.image_size=16",
           "data.limit=null", "ae.optim.batch_size=16", "ae.optim.epochs=3", "ae.val_images=16",
           "ae.loss.disc_weight=0.1"]



def _on_bank(method: str):
    """Gen-METHOD on a bank of the tiny .npz's train split (52 images: 3 steps an epoch at batch 16); two alphas
    so that the interpolation's alpha is drawn too."""
    return lambda npz, bank: ["pretrain", *TINY_VIT, "optim.batch_size=16", "--method", method, "--data", str(npz),
                              "--bank", str(bank()), "gen.alphas=[0.3,0.7]"]


# name -> (CLI arguments after `gensis`, given the path of a tiny .npz and a function that returns the path of a
# bank of it; module of the checkpoint to compare)
CASES = {
    "dino": (lambda npz, bank: ["pretrain", *TINY_VIT], "student"),
    "gen-dino-pixel": (lambda npz, bank: ["pretrain", *TINY_VIT, "--interp", "pixel"], "teacher"),
    # every other method through its Gen- variant (which runs the method's own loss too)
    "gen-ibot-pixel": (lambda npz, bank: ["pretrain", *TINY_VIT, "--method", "ibot", "--interp", "pixel"],
                       "teacher"),
    "gen-dinov2-pixel": (lambda npz, bank: ["pretrain", *TINY_VIT, "--method", "dinov2", "--interp", "pixel"],
                         "teacher"),
    "gen-simclr-pixel": (lambda npz, bank: ["pretrain", *TINY_VIT, "--method", "simclr", "--interp", "pixel"],
                         "student"),
    # the bank: a distillation target and a contrastive one, all the Gen- machinery tells apart (iBOT and DINOv2
    # take the distillation path of gen-dino-bank; their own Gen- step is covered by their pixel cases above)
    "gen-dino-bank": (_on_bank("dino"), "teacher"),
    "gen-simclr-bank": (_on_bank("simclr"), "student"),
    "autoencoder+disc": (lambda npz, bank: [*TINY_AE, "--data", str(npz)], "disc"),
}


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> Path:
    """64 labelled 16×16 grey images (a bright square whose position is the class)."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.arange(64) % 4
    images = rng.integers(0, 40, (64, 16, 16), dtype=np.uint8)
    for i, c in enumerate(labels):
        y, x = divmod(int(c), 2)
        images[i, y * 8 + 1:y * 8 + 7, x * 8 + 1:x * 8 + 7] = 220
    path = tmp_path_factory.mktemp("ddp-data") / "tiny.npz"
    np.savez(path, images=images, labels=labels)
    return path


@pytest.fixture(scope="module")
def tiny_bank(tmp_path_factory, tiny_npz):
    """bank() -> a bank (K=2, alphas 0.3/0.7, fake generator) of ``tiny_npz``'s train split, made on first use;
    ``data.limit=128`` as ``TINY_VIT``'s, or ``pretrain --bank`` refuses it as made from other data."""
    made: list[Path] = []

    def bank() -> Path:
        if not made:
            made.append(build_bank(tiny_npz, tmp_path_factory.mktemp("ddp-bank") / "bank", "data.limit=128"))
        return made[0]

    return bank


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], out: Path, resume: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_port()}", "-m", "gensis.cli.main", *args, "--out", str(out)]
    return subprocess.Popen(cmd + (["--resume"] if resume else []), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(p: subprocess.Popen, timeout: float = 300) -> None:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_process_kill_and_resume_equals_uninterrupted(case, tmp_path, tiny_npz, tiny_bank):
    make_args, module = CASES[case]
    args = make_args(tiny_npz, tiny_bank)
    ref = tmp_path / "ref"
    _finish(_torchrun(args, ref))

    run = tmp_path / "killed"
    p = _torchrun(args, run)
    ckpt = run / "checkpoint.safetensors"
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None and not ckpt.is_file():
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be killed"
    os.killpg(p.pid, signal.SIGKILL)  # torchrun and both workers
    p.communicate()
    _, info = load_checkpoint(ckpt)
    assert info["meta"]["epoch"] < 2 and info["meta"]["world"] == 2 and len(info["meta"]["rng"]) == 2
    _finish(_torchrun(args, run, resume=True))

    a, _ = load_checkpoint(ref / "checkpoint.safetensors")
    b, info_b = load_checkpoint(ckpt)
    wa, wb = sub_state(a, module), sub_state(b, module)
    assert wa and wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # both ranks' random states were saved and differ (per-rank streams)
    gens = sorted(k.removeprefix("extra.rng.r0.") for k in b if k.startswith("extra.rng.r0.gen."))
    assert gens and all(not torch.equal(b[f"extra.rng.r0.{g}"], b[f"extra.rng.r1.{g}"]) for g in gens)
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(l) for l in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows if "loss" in r] == [r["loss"] for r in ref_rows if "loss" in r]
    if case.startswith("gen-"):  # the Gen- views were drawn on both ranks after the resume, and trained on
        assert all(info["meta"]["rng"][r]["gen.gen"] != info_b["meta"]["rng"][r]["gen.gen"] for r in (0, 1))
        assert all("loss_disent" in r for r in rows if "loss" in r)
    if case.endswith("-bank"):  # from the bank: its views (gen.generative_prob > 0) and its interpolations
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["inputs"]["bank_identity"] == json.loads((tiny_bank() / "bank.json").read_text())["identity"]
        gen = RunDir(run).config()["gen"]
        assert gen["interp"] == "bank" and gen["generative_prob"] > 0


POISON = """
import os, sys
from gensis.ssl.methods.dino import DINO

original = DINO.loss


def poisoned(self, s_out, t_out, step):  # a NaN loss at step 5 on rank 1 only
    loss, parts = original(self, s_out, t_out, step)
    return (loss * float("nan") if step.it == 5 and os.environ["RANK"] == "1" else loss), parts


DINO.loss = poisoned
from gensis.cli.main import main

sys.exit(main())
"""


@pytest.mark.parametrize("mode", ["every_step", "deferred"])
def test_divergence_under_torchrun_is_one_line(mode, tmp_path):
    """A NaN loss on one rank stops both (the verdict is all-reduced) and is printed once, by rank 0."""
    script = tmp_path / "poisoned.py"
    script.write_text(POISON)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_port()}", str(script), "pretrain", *TINY_VIT, "optim.epochs=2", "train.log_every=10",
           "--out", str(run)]
    p = subprocess.run(cmd, env={**ENV, "GENSIS_FINITE_CHECK": mode}, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert out.count("gensis: error:") == 1, out[-3000:]  # (two ranks' lines may share one line of output)
    line = next(l for l in out.splitlines() if "gensis: error:" in l)
    assert "epoch 1, step 5" in line and "(epoch 0) is untouched" in line, out[-3000:]
    assert "Traceback" not in out.split("gensis: error:")[0]
    _, info = load_checkpoint(run / "checkpoint.safetensors")
    assert info["meta"]["epoch"] == 0
