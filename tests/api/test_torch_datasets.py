"""BankDataset and ImageSet.as_torch_dataset in DataLoaders with worker processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from gensis.bank.reader import BankReader
from gensis.data import BankDataset, open_data

TRANSFORM = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Resize(8, antialias=True)])


def test_bank_dataset_items(fake_bank, images_npz):
    ds = BankDataset(fake_bank)  # the dataset recorded in the bank
    reader = BankReader(fake_bank)
    assert len(ds) == reader.num_images == 40  # the train split of 48 (10 of each class)
    item = ds[5]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 16, 16)
    assert item["generated"].shape == (2, 3, 16, 16)
    assert item["interpolated"].shape == (2, 3, 16, 16)
    assert item["alpha"].tolist() == pytest.approx([0.3, 0.7])
    assert torch.equal(item["generated"], reader.generative_batch(np.array([5, 5]), np.array([0, 1])))
    interp, sec = reader.interpolated_batch(np.array([5]), np.array([0.7]))
    assert torch.equal(item["interpolated"][1], interp[0]) and item["partner_index"] == int(sec[0])
    train = open_data(str(images_npz), "train")
    assert torch.equal(item["image"], torch.from_numpy(train.get(5)).permute(2, 0, 1))
    assert torch.equal(item["partner"], torch.from_numpy(train.get(item["partner_index"])).permute(2, 0, 1))
    assert item["label"] == int(train.labels[5]) and item["index"] == 5
    assert item["partner_index"] != 5


def test_bank_dataset_in_a_dataloader_with_two_workers(fake_bank):
    ds = BankDataset(fake_bank, transform=TRANSFORM)
    serial = list(DataLoader(ds, batch_size=8, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=8, num_workers=2))
    assert len(parallel) == 5
    b = parallel[0]
    assert b["image"].shape == (8, 3, 8, 8) and b["image"].dtype == torch.float32
    assert b["generated"].shape == (8, 2, 3, 8, 8) and b["alpha"].shape == (8, 2)
    assert b["partner"].shape == (8, 3, 8, 8) and b["partner_index"].shape == (8,)
    for s, p in zip(serial, parallel):
        for key in ("image", "generated", "interpolated", "partner", "label", "partner_index"):
            assert torch.equal(s[key], p[key]), key


def test_bank_dataset_refuses_another_dataset(fake_bank, tmp_path):
    from gensis.errors import UserError

    other = tmp_path / "other.npz"
    np.savez(other, images=np.zeros((48, 16, 16, 3), np.uint8))
    with pytest.raises(UserError, match="generated from"):
        BankDataset(fake_bank, data=str(other))


def test_image_set_as_torch_dataset(images_npz):
    images = open_data(str(images_npz), "val")
    ds = images.as_torch_dataset(TRANSFORM)
    x, y = ds[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and y == int(images.labels[0])
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    xs = torch.cat([b[0] for b in batches])
    assert xs.shape == (len(images), 3, 8, 8)
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.as_tensor(images.labels))
    raw = images.as_torch_dataset()
    assert torch.equal(raw[-1][0], torch.from_numpy(images.get(len(images) - 1)).permute(2, 0, 1))
    with pytest.raises(IndexError):
        raw[len(images)]


def test_bank_dataset_fidelity_filter_is_pretrainings(fake_bank):
    """``min_score`` / ``keep_quantile`` / ``weighting`` give the sampling weights pretraining draws by
    (``gensis.bank.scores.entry_weights`` of the same ``gen.bank_*`` values); without them every weight is 1."""
    from gensis.bank.scores import entry_weights
    from gensis.errors import UserError

    reader = BankReader(fake_bank)
    scores = reader.scores()  # (N, K + A)
    plain = BankDataset(fake_bank)
    assert plain[3]["generated_weight"].tolist() == [1.0, 1.0] and plain[3]["interpolated_weight"].tolist() == [1, 1]
    ds = BankDataset(fake_bank, keep_quantile=0.5, weighting="score")
    expect = entry_weights(scores, 2, {"bank_min_score": None, "bank_keep_quantile": 0.5, "bank_weighting": "score"})
    gen = torch.stack([ds[i]["generated_weight"] for i in range(len(ds))]).numpy()
    interp = torch.stack([ds[i]["interpolated_weight"] for i in range(len(ds))]).numpy()
    np.testing.assert_allclose(gen, expect[:, :2], rtol=1e-6)
    np.testing.assert_allclose(interp, expect[:, 2:], rtol=1e-6)  # alphas 0.3, 0.7 in slot order
    assert 0 < (gen > 0).mean() < 1 and 0 < (interp > 0).mean() < 1  # the filter removed some, kept some
    thr = float(np.median(scores[:, :2]))
    hard = BankDataset(fake_bank, min_score=thr)
    assert torch.stack([hard[i]["generated_weight"] for i in range(len(hard))]).numpy().tolist() == \
        (scores[:, :2] >= thr).astype(np.float32).tolist()
    with pytest.raises(UserError, match="bank_weighting"):
        BankDataset(fake_bank, weighting="rank")
    batch = next(iter(DataLoader(ds, batch_size=8, num_workers=0)))
    assert batch["generated_weight"].shape == (8, 2) and batch["interpolated_weight"].shape == (8, 2)


def test_bank_index_arguments_must_be_integers_in_range(fake_bank):
    """A float or bool index was silently truncated (0.5 -> image 0, True -> 1): now one UserError line naming
    the argument and its range; integer numpy/torch values still work, and the errors are still IndexErrors."""
    from gensis.errors import UserError

    r = BankReader(fake_bank)
    n, k = r.num_images, r.num_generative
    for call, match in [
        (lambda: r.generative_batch([0.5], [0]), rf"idx must be integers in \[0, {n}\).*got 0\.5 \(a float\)"),
        (lambda: r.generative_batch(np.array([0.0]), [0]), r"idx must be integers.*a float"),
        (lambda: r.generative_batch([0], [0.5]), rf"k must be integers in \[0, {k}\).*got 0\.5"),
        (lambda: r.generative_batch([True, 1], [0]), r"idx must be integers.*got True \(a bool\)"),
        (lambda: r.generative_batch(np.array([True]), [0]), r"idx must be integers.*a bool"),
        (lambda: r.generative_batch([n], [0]), rf"idx must be integers in \[0, {n}\).*got {n}$"),
        (lambda: r.generative_batch([-1], [0]), r"idx must be integers.*got -1$"),
        (lambda: r.generative_batch([0], [k]), rf"k must be integers in \[0, {k}\).*got {k}$"),
        (lambda: r.interpolated_batch([1.5], [0.3]), r"idx must be integers.*got 1\.5"),
        (lambda: r.secondary(torch.tensor([0.5])), r"idx must be integers.*got 0\.5"),
        (lambda: r.entries([0], [0.5]), r"slot must be integers.*got 0\.5"),
    ]:
        with pytest.raises(UserError, match=match) as e:
            call()
        assert isinstance(e.value, IndexError) and "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"k has 2 values for 3 image indices"):  # was silently cut to 2
        r.generative_batch([0, 1, 2], [0, 1])
    for alpha, match in [([0.3, 0.5], r"alpha has 2 values for 3 image indices"),  # numpy's broadcasting error
                         ([[0.3], [0.5], [0.7]], r"alpha must be one value or one per image index.*\(3, 1\)"),
                         ([0.3, float("nan"), 0.5], r"alpha must be finite, got nan")]:
        with pytest.raises(UserError, match=match) as e:
            r.interpolated_batch([0, 1, 2], alpha)
        assert "\n" not in str(e.value)
    one, _ = r.interpolated_batch([0, 1, 2], 0.5)  # one value for every index (a scalar or a list of one)
    assert torch.equal(one, r.interpolated_batch([0, 1, 2], [0.5])[0]) and one.shape[0] == 3
    ok = r.generative_batch(np.array([3], np.int32), torch.tensor([1]))
    assert torch.equal(ok, r.generative_batch([3], [1])) and ok.shape[0] == 1
    assert r.generative_batch([], []).shape[0] == 0
    ds = BankDataset(fake_bank)
    for bad in (0.5, True, len(ds)):
        with pytest.raises(UserError, match="index") as e:
            ds[bad]
        assert isinstance(e.value, IndexError)
    assert ds[np.int64(3)]["index"] == 3 and ds[-1]["index"] == len(ds) - 1
