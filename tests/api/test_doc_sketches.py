"""The ```python blocks of docs/bank.md and docs/eldm.md run, on tiny runs, with their placeholders bound.

docs/api.md's blocks run as one script (``test_docs.py``); these pages show sketches with placeholder names
(``"BANK"``, ``images``, ``idx`` ...). Each block here runs as written, its run folders replaced by the fixtures'
and its free names bound by a short prelude, so a renamed method or a changed signature fails here.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import torch

import gensis
from gensis.eldm.generator import EmbeddingConditionedGenerator

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_blocks(page: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (DOCS / page).read_text(), flags=re.S | re.M)


def test_bank_reader_sketch_runs(fake_bank, images_npz):
    (block,) = python_blocks("bank.md")
    assert '"BANK"' in block
    ds = gensis.open_data(str(images_npz), "train")
    names = {"ds": ds, "idx": np.array([0, 3]), "k": 1, "alpha": 0.3, "slot": 2}
    exec(block.replace('"BANK"', repr(str(fake_bank))), names)  # noqa: S102
    assert names["imgs"].dtype == torch.uint8 and names["imgs"].shape[0] == 2
    assert names["sec"].dtype == np.int64 and names["rows"].shape == (2,)


def test_generator_sketches_run(pixel_eldm_run, images_npz):
    protocol, usage = python_blocks("eldm.md")
    doc: dict = {}
    exec("from typing import Protocol, Sequence\nfrom torch import Tensor\n" + protocol, doc)  # noqa: S102
    documented = doc["EmbeddingConditionedGenerator"]
    for cls in (documented, EmbeddingConditionedGenerator):  # the same members, and generate's parameters
        assert set(vars(cls)["__annotations__"]) == {"image_size"}
    assert {m for m in vars(documented) if not m.startswith("_")} == {
        m for m in vars(EmbeddingConditionedGenerator) if not m.startswith("_")} == {"identity", "encode", "generate"}
    sig = [list(inspect.signature(c.generate).parameters) for c in (documented, EmbeddingConditionedGenerator)]
    assert sig[0] == sig[1]
    assert '"runs/eldm"' in usage
    images = torch.from_numpy(gensis.open_data(str(images_npz), "val").stack(range(4))).permute(0, 3, 1, 2)
    names: dict = {"images": images, "seeds": [0, 1, 2, 3]}
    lines = usage.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("gen = load_generator(")) + 1
    lines.insert(at, "e1, e2 = gen.encode(images[:2]), gen.encode(images[2:])")  # the sketch's two embeddings
    code = "\n".join(lines)
    exec(code.replace('"runs/eldm"', repr(str(pixel_eldm_run))), names)  # noqa: S102
    gen, e = names["gen"], names["e"]
    assert e.shape[0] == 4 and names["x"].dtype == torch.float32  # the last x: generate_float
    assert torch.equal(gen.generate(e[:3], seeds=7), gen.generate(e[:3], seeds=[7, 8, 9]))  # "seeds=7: 7, 8, 9"


def test_bank_and_eldm_pages_name_every_preset():
    """docs/bank.md and docs/eldm.md listed smoke, demo, small, paper as the presets; gpu, histo and histo-cpu
    (which `--preset` takes, and docs/wsi.md's commands use) were missing."""
    configs = Path(gensis.__file__).parent / "configs"
    for page, stage, anchor in (("bank.md", "bank", "`base.yaml` holds every key"),
                                ("eldm.md", "eldm", "Presets live in")):
        text = (DOCS / page).read_text()
        para = " ".join(text[text.index(anchor):].split("\n\n")[0].split())
        presets = {p.stem for p in (configs / stage).glob("*.yaml")} - {"base"}
        assert presets and all(f"`{p}`" in para for p in presets), (page, sorted(presets), para)
