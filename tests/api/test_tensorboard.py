"""TensorBoard event files next to metrics.jsonl: the same scalars, images, resume semantics."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboardX")

from gensis.rundir import MetricsLog  # noqa: E402


def read_events(folder: Path) -> list:
    """Every Event of every event file in ``folder`` (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    events = []
    for f in sorted(folder.glob("events.out.tfevents.*")):
        data = f.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = event_pb2.Event()
            ev.ParseFromString(data[pos + 12:pos + 12 + n])
            events.append(ev)
            pos += 12 + n + 4
    return events


def scalars(folder: Path) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for ev in read_events(folder):
        for v in ev.summary.value:
            if v.HasField("simple_value"):
                out.setdefault(v.tag, {})[ev.step] = v.simple_value
    return out


def test_same_scalars_as_jsonl_and_images(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl", logger="tensorboard")
    for step in range(3):
        log.log({"step": step * 10, "epoch": 0, "loss": 1.0 / (step + 1), "knn": {"top1": 50.0 + step}, "note": "x"})
    log.log_image("samples", np.full((3, 8, 8), 200, np.uint8), 20)
    log.close()
    tb = scalars(tmp_path / "tensorboard")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert tb["loss"] == {r["step"]: pytest.approx(r["loss"]) for r in rows}
    assert tb["knn/top1"] == {0: 50.0, 10: 51.0, 20: 52.0} and "note" not in tb and "step" not in tb
    images = [v for ev in read_events(tmp_path / "tensorboard") for v in ev.summary.value if v.HasField("image")]
    assert len(images) == 1 and images[0].image.height == 8 and images[0].image.encoded_image_string[:4] == b"\x89PNG"
    # resume at step 10: the JSON rows past it are dropped and TensorBoard is told to discard its events too
    MetricsLog(tmp_path / "metrics.jsonl", keep_until_step=10, logger="tensorboard").close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0]
    starts = [ev.step for ev in read_events(tmp_path / "tensorboard") if ev.HasField("session_log")]
    assert starts == [10]


def test_jsonl_only_by_default_and_env_switch(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    MetricsLog(tmp_path / "a" / "metrics.jsonl").log({"step": 0, "loss": 1.0})
    assert not (tmp_path / "a" / "tensorboard").exists()
    monkeypatch.setenv("GENSIS_LOGGER", "tensorboard")
    (tmp_path / "b").mkdir()
    log = MetricsLog(tmp_path / "b" / "metrics.jsonl")
    log.log({"step": 0, "loss": 1.0})
    log.close()
    assert scalars(tmp_path / "b" / "tensorboard")["loss"] == {0: 1.0}
    monkeypatch.setenv("GENSIS_LOGGER", "wandb")
    from gensis.errors import UserError

    with pytest.raises(UserError, match="unknown logger"):
        MetricsLog(tmp_path / "b" / "metrics.jsonl")


def test_a_pretraining_run_writes_event_files(images_npz, tmp_path):
    import gensis

    run = gensis.pretrain(str(images_npz), tmp_path / "dino", preset="smoke", overrides={
        "optim.epochs": 1, "optim.batch_size": 16, "data.image_size": 16, "model.patch_size": 4, "model.depth": 1,
        "aug.n_local": 0, "train.threads": 1, "train.log_every": 1, "train.logger": "tensorboard"})
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    tb = scalars(run / "tensorboard")
    logged = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert len(logged) >= 2 and tb["loss"] == pytest.approx(logged)
    assert tb["lr"] == pytest.approx({r["step"]: r["lr"] for r in rows if "lr" in r})
    with pytest.raises(gensis.UserError, match="train.logger"):
        gensis.make_config("pretrain", "smoke", {"train.logger": "wandb"})


def test_eldm_training_shows_its_sample_grid(images_npz, encoder_run, tmp_path):
    import gensis

    run = gensis.train_eldm(encoder_run, str(images_npz), tmp_path / "eldm", preset="smoke", overrides={
        "data.image_size": 16, "optim.epochs": 2, "optim.batch_size": 16, "train.threads": 1, "sample.steps": 2,
        "unet.block_out_channels": [8, 16], "unet.norm_num_groups": 4, "unet.context_dim": 16,
        "unet.attention_head_dim": 4, "train.logger": "tensorboard"})
    events = read_events(run / "tensorboard")
    grids = [(ev.step, v.image) for ev in events for v in ev.summary.value if v.HasField("image")]
    assert [tag for tag in {v.tag for ev in events for v in ev.summary.value if v.HasField("image")}] == ["samples"]
    assert len(grids) == 2 and grids[0][1].height == 16 + 2 and grids[0][1].width == 8 * 17 + 1  # 8 images, padding 1
    assert "loss" in scalars(run / "tensorboard")


def test_autoencoder_training_shows_reconstructions(images_npz, tmp_path):
    import gensis

    run = gensis.train_autoencoder(str(images_npz), tmp_path / "ae", preset="smoke", overrides={
        "data.image_size": 16, "ae.optim.epochs": 1, "ae.optim.batch_size": 16, "ae.val_images": 4,
        "ae.model.block_out_channels": [8, 8], "ae.model.norm_num_groups": 4, "train.threads": 1,
        "train.logger": "tensorboard"})
    images = [v.image for ev in read_events(run / "tensorboard") for v in ev.summary.value if v.HasField("image")]
    assert len(images) == 1 and images[0].height == 2 * 17 + 1 and images[0].width == 4 * 17 + 1
