"""The public API: `import gensis` is light, names resolve lazily, stages take objects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gensis
from gensis.errors import UserError


def test_import_is_light_and_every_public_name_resolves():
    code = "import sys, gensis; assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    for name in gensis.__all__:
        assert getattr(gensis, name) is not None, name
    assert callable(gensis.export_model) and callable(gensis.make_config)  # not shadowed by sub-packages
    with pytest.raises(AttributeError):
        gensis.no_such_thing  # noqa: B018


def test_submodules_named_in_the_docs_resolve_right_after_import():
    """docs/api.md names `gensis.api.pretrain_config(...)` and `gensis.rundir.MetricsLog`: after a bare
    `import gensis` they were an AttributeError (module 'gensis' has no attribute 'api')."""
    code = ("import sys, gensis; assert 'gensis.api' not in sys.modules; "
            "assert gensis.api.pretrain_config(preset='smoke').method == 'dino'; "
            "assert callable(gensis.rundir.MetricsLog) and gensis.make_config is gensis.api.make_config; "
            "assert not hasattr(gensis, 'no_such_module')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_make_config_validates_like_the_cli():
    cfg = gensis.make_config("pretrain", "smoke", {"optim.epochs": 3, "data": {"limit": 10}})
    assert cfg["optim"]["epochs"] == 3 and cfg["data"]["limit"] == 10 and cfg["data"]["image_size"] == 28
    assert gensis.make_config("eldm", "smoke", ["optim.epochs=4"])["optim"]["epochs"] == 4
    with pytest.raises(UserError, match="did you mean 'optim.epochs'"):
        gensis.make_config("pretrain", "smoke", {"optim.epoks": 1})
    with pytest.raises(UserError, match="optim.epochs"):
        gensis.make_config("pretrain", "smoke", {"optim.epochs": 0})
    with pytest.raises(UserError, match="unknown stage"):
        gensis.make_config("train", "smoke")


class _Squares(torch.utils.data.Dataset):
    """A torch Dataset of float (3, 16, 16) images with (image, label) items and .targets."""

    def __init__(self, n: int = 12):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, 16, 16, generator=g)
        self.targets = [i % 3 for i in range(n)]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.targets[i]


def test_as_image_set_takes_arrays_tensors_and_torch_datasets(images_npz):
    ds = gensis.as_image_set(_Squares())
    assert len(ds) == 12 and ds.get(1).shape == (16, 16, 3) and ds.get(1).dtype == np.uint8
    assert ds.labels.tolist() == [i % 3 for i in range(12)]
    assert np.array_equal(ds.get(1), (_Squares().x[1].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    assert ds.identity == gensis.as_image_set(_Squares()).identity
    arr = np.zeros((4, 16, 16, 3), np.uint8)
    assert gensis.as_image_set(arr).get(0).shape == (16, 16, 3)
    t = gensis.as_image_set(torch.zeros(4, 3, 16, 16, dtype=torch.uint8))
    assert t.get(3).shape == (16, 16, 3)
    assert len(gensis.as_image_set(str(images_npz))) == 48  # a string: the whole source
    with pytest.raises(UserError):
        gensis.as_image_set(np.zeros((4, 16, 16), np.float32))


def test_pretrain_an_object_then_embed_and_knn(images_npz, tmp_path):
    images = gensis.open_data(str(images_npz), "train")
    run = gensis.pretrain(images, tmp_path / "dino", preset="smoke", overrides={
        "optim.epochs": 1, "optim.batch_size": 16, "data.image_size": 16, "model.patch_size": 4,
        "model.depth": 1, "aug.n_local": 0, "train.threads": 1})
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["inputs"]["data"].startswith("python:") and manifest["inputs"]["data_identity"] == images.identity
    enc = gensis.load_encoder(run)
    feats = gensis.embed(enc, images)
    assert feats.shape == (len(images), enc.dim) and np.isfinite(feats).all()
    assert np.allclose(feats[:4], enc(torch.from_numpy(images.stack(range(4))).permute(0, 3, 1, 2)).numpy(), atol=1e-5)
    res = gensis.knn(run, images, gensis.open_data(str(images_npz), "val"), ks=[3])
    assert res["k"] == 3 and 0 <= res["top1"] <= 100


def test_pretrain_method_is_chosen_and_validated(images_npz, tmp_path):
    with pytest.raises(UserError, match=r"unknown method 'simclar' \(valid: .*simclr.*did you mean 'simclr'"):
        gensis.pretrain(str(images_npz), tmp_path / "bad", preset="smoke", method="simclar")
    assert not (tmp_path / "bad").exists()  # refused before any work
    run = gensis.pretrain(str(images_npz), tmp_path / "simclr", preset="smoke", method="simclr", overrides={
        "optim.epochs": 1, "optim.batch_size": 16, "data.image_size": 16, "model.patch_size": 4,
        "model.depth": 1, "aug.n_local": 0, "train.threads": 1})
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["method"] == "simclr"
    assert json.loads((run / "manifest.json").read_text())["status"] == "done"


def test_linear_probe(encoder_run, images_npz):
    train, val = gensis.open_data(str(images_npz), "train"), gensis.open_data(str(images_npz), "val")
    res = gensis.linear(encoder_run, train, val, epochs=2, lrs=[0.1, 1.0], aug_copies=1)
    assert res["protocol"] == "linear" and {r["lr"] for r in res["results"]} == {0.1, 1.0}
    assert 0 <= res["top1"] <= 100


def test_bank_of_an_object_then_gen_dino_on_it(images_npz, tmp_path):
    from gensis.bank.fake import FakeGenerator

    images = gensis.as_image_set(np.load(images_npz)["images"], labels=np.load(images_npz)["labels"])
    bank = gensis.generate_bank(None, images, tmp_path / "bank", generator=FakeGenerator(image_size=16, dim=8),
                                preset="smoke", overrides={"data.limit": None, "storage.shard_size": 16})
    ds = gensis.BankDataset(bank)  # the recorded dataset is this process' object
    assert len(ds) == len(images) == 48 and ds[3]["generated"].shape == (1, 3, 16, 16)
    assert torch.equal(ds[3]["image"], torch.from_numpy(images.get(3)).permute(2, 0, 1))
    run = gensis.pretrain(images, tmp_path / "gen-dino", bank=bank, preset="smoke", overrides={
        "optim.epochs": 1, "optim.batch_size": 16, "data.image_size": 16, "model.patch_size": 4, "model.depth": 1,
        "aug.n_local": 0, "train.threads": 1, "data.limit": None})
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("disent" in key for r in rows for key in r), rows[0].keys()  # the bank's interpolations were used


def test_evaluate_runs_any_protocol_with_the_cli_parser(images_npz, tmp_path):
    res = gensis.evaluate("knn", encoder="pixels", train=f"{images_npz}@train", test=f"{images_npz}@val", k=[1, 3],
                          cache="none", json=tmp_path / "knn.json")
    assert res["protocol"] == "knn" and {r["k"] for r in res["results"]} == {1, 3}
    assert json.loads((tmp_path / "knn.json").read_text())["top1"] == res["top1"]
    with pytest.raises(UserError, match=r"unknown option 'kk'; did you mean 'k'"):
        gensis.evaluate("knn", encoder="pixels", kk=[1])
    with pytest.raises(UserError, match=r"gensis eval knn: .*--k.*invalid int value"):
        gensis.evaluate("knn", encoder="pixels", k=["x"])
    with pytest.raises(UserError, match="unknown evaluation 'knnn'"):
        gensis.evaluate("knnn")


def test_eldm_figures_and_fidelity_from_python(pixel_eldm_run, images_npz, tmp_path):
    """`gensis eldm sample` / `eval` as functions: the run's config, then validated overrides."""
    imgs = gensis.open_data(str(images_npz), "val")
    pngs = gensis.eldm_figures(pixel_eldm_run, imgs, tmp_path / "fig", device="cpu", steps=2, overrides={
        "figures.rows": 2, "figures.per_image": 2, "figures.pairs": 2, "figures.alphas": [0.5]})
    assert [p.name for p in pngs] == ["generative.png", "interpolation.png"] and all(p.is_file() for p in pngs)
    with pytest.raises(UserError, match=r"figures.rows=0: must be an integer >= 1"):
        gensis.eldm_figures(pixel_eldm_run, imgs, tmp_path / "bad", overrides={"figures.rows": 0})
    res = gensis.evaluate_eldm(pixel_eldm_run, str(images_npz), n=4, steps=2, device="cpu",
                               overrides=["eval.knn_k=3"])
    assert res["n"] == 4 and res["steps"] == 2 and 0 <= res["retrieval_top1"] <= 1
    with pytest.raises(UserError, match="train and val splits"):
        gensis.evaluate_eldm(pixel_eldm_run, imgs)
    with pytest.raises(UserError, match="not a finished"):
        gensis.evaluate_eldm(tmp_path, str(images_npz))


def test_a_stage_call_interrupted_or_failed_frees_its_folder(images_npz, tmp_path, monkeypatch):
    """A KeyboardInterrupt (a notebook's stop button) in `gensis.pretrain` left RUN/.gensis.lock held until the
    Python process exited: `gensis pretrain --resume` from a terminal was refused as 'in use by another gensis
    process'. A lock another thread takes meanwhile stays that thread's."""
    import threading

    from gensis.rundir import LOCK_NAME, RunDir, held_locks, lock_folder, release_folder

    start = RunDir.start

    def start_then_interrupt(self, *args, **kwargs):
        start(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "start", start_then_interrupt)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        gensis.pretrain(images_npz, run, preset="smoke", overrides={"optim.batch_size": 16})
    # this call's folder only: the lanes tests (tests/cli) lock theirs in this process and leave them to it
    assert (run / "manifest.json").exists() and not (run / LOCK_NAME).exists()
    assert not [p for p in held_locks() if Path(p).resolve() == run.resolve()]

    from gensis.rundir import releasing_locks

    other = tmp_path / "other"
    with releasing_locks():
        t = threading.Thread(target=lock_folder, args=(other,))
        t.start()
        t.join()
    assert (other / LOCK_NAME).exists()
    release_folder(other)


def test_arguments_of_the_wrong_type_are_one_user_error(tmp_path):
    """out=None, overrides=5, preset=3, from_dict(None) were TypeErrors from deep inside (os.fspath, pathlib,
    dict()); a string '1e-3' for a float was shown as 1e-3, a value that looks valid."""
    cases = [
        (lambda: gensis.pretrain("builtin:digits", None, preset="smoke"), "out must be a path .* got NoneType"),
        (lambda: gensis.load_encoder(None), "run must be a path"),
        (lambda: gensis.export_model(tmp_path, "timm", 5), "out must be a path .* got int"),
        (lambda: gensis.PretrainConfig.from_preset("smoke", 5), "overrides must be a mapping .* got int"),
        (lambda: gensis.make_config("eldm", 3), r"preset must be a preset name \(smoke, .* got int"),
        (lambda: gensis.PretrainConfig.from_dict(None), "from_dict takes a mapping of config keys .* got NoneType"),
        (lambda: gensis.PretrainConfig.from_preset("smoke", {"optim.lr": "1e-3"}), r"optim.lr='1e-3' \(a string\)"),
    ]
    for call, message in cases:
        with pytest.raises(UserError, match=message):
            call()
    assert not any(tmp_path.iterdir())
    assert gensis.PretrainConfig.from_preset("smoke", (f"optim.epochs={e}" for e in [4])).optim.epochs == 4


def test_a_stage_call_leaves_the_process_as_it_was(images_npz, tmp_path):
    """In a notebook, gensis.pretrain(..., overrides={"train.threads": 1}) left torch on 1 thread for the rest of
    the session (every later cell slower), and its seeding replaced the notebook's own (torch.manual_seed(5)
    then a stage: the next torch.rand was seed 0's); also when the stage fails."""
    import random

    torch.set_num_threads(2)
    torch.manual_seed(5), np.random.seed(6), random.seed(7)
    want = torch.rand(3), np.random.rand(3), random.random()
    torch.manual_seed(5), np.random.seed(6), random.seed(7)
    gensis.pretrain(images_npz, tmp_path / "run", preset="smoke",
                    overrides={"optim.batch_size": 16, "train.threads": 1, "train.seed": 3})
    assert torch.get_num_threads() == 2 and torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32
    got = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
    with pytest.raises(UserError):
        gensis.pretrain(images_npz, tmp_path / "bad", preset="smoke",
                        overrides={"optim.batch_size": 16, "train.threads": 1, "optim.epochs": -1})
    assert torch.get_num_threads() == 2
    gensis.pretrain(images_npz, tmp_path / "auto", preset="smoke", overrides={"optim.batch_size": 16})
    assert torch.get_num_threads() == 2  # train.threads null (a core left to the helper thread) put back, too
    torch.set_num_threads(1)


def test_load_encoder_which_and_the_random_baseline(encoder_run):
    """which='bogus' was 'RUN has no bogus_backbone.safetensors: is the pretraining run finished?' (for a
    finished run); load_encoder('random') reseeded torch's global generator (the notebook's seeding lost)."""
    for spec in (encoder_run, "pixels", "random"):
        with pytest.raises(UserError, match="which must be one of teacher, student, got 'bogus'"):
            gensis.load_encoder(spec, which="bogus")
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    a = gensis.load_encoder("random")
    assert torch.equal(torch.rand(3), want)
    b = gensis.load_encoder("random")  # still seeded: the same baseline every time
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_the_library_leaves_the_environment_alone(tmp_path):
    """Loading an encoder set HF_HUB_OFFLINE=1 in os.environ for the rest of the notebook (and every process it
    starts: a later `!huggingface-cli download` or a hub model in a subprocess was refused as offline); only the
    `gensis` command sets it."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    code = ("import os, gensis; gensis.load_encoder('random'); import gensis.models.backbone; "
            "assert 'HF_HUB_OFFLINE' not in os.environ")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-500:]
