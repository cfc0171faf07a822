"""The GPU study's presets and scripts, checked on any machine: the presets resolve and pass the schema, the
bank covers exactly the pretraining images, the scripts parse, and the table adds paired differences."""

import subprocess
from pathlib import Path

import pytest

from gensis.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("family", ["pretrain", "eldm", "bank"])
def test_gpu_presets_resolve(family):
    cfg = load_config(family, "gpu")
    assert cfg["data"]["limit"] is None
    if family != "bank":
        assert cfg["data"]["image_size"] == 32


def test_gpu_pretrain_is_vit_tiny_with_tens_of_epochs():
    cfg = load_config("pretrain", "gpu")
    assert cfg["model"]["embed_dim"] == 192 and cfg["model"]["patch_size"] == 4
    assert cfg["optim"]["epochs"] >= 20


@pytest.mark.parametrize("script", ["science_gpu.sh", "gpu_check.sh"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)]).returncode == 0


def test_table_has_paired_differences():
    import importlib.util

    spec = importlib.util.spec_from_file_location("table", ROOT / "benchmarks" / "science_gpu_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seeds = [{"_n": {"train": 8, "test": 2}, "dino": {20: 50.0}, "gendino": {20: 53.0}, "pixel": {20: 49.0}},
             {"_n": {"train": 8, "test": 2}, "dino": {20: 40.0}, "gendino": {20: 41.0}, "pixel": {20: 42.0}}]
    text = mod.format_table(seeds, 20)
    assert "Gen-DINO - DINO" in text and "+3.00, +1.00" in text and "2.00 ± 1.41" in text
    assert "pixel - DINO" in text and "-1.00, +2.00" in text
