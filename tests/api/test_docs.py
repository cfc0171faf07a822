"""docs/api.md: every ```python block runs, in order, as one script (on the smoke preset and builtin:digits)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_docs_have_runnable_blocks():
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 8
    script = "\n".join(blocks)
    compile(script, str(DOC), "exec")  # syntax, at least, in the fast suite
    for name in ("gensis.pretrain(", "gensis.train_eldm(", "gensis.generate_bank(", "gensis.BankDataset(",
                 "gensis.knn(", "timm.create_model(\"local-dir:", "EmbeddingConditionedPipeline", "num_workers=2",
                 "gensis.PretrainConfig.from_preset(", "config=cfg", "gensis.evaluate_eldm(", "gensis.evaluate(\"umap\""):
        assert name in script, name


@pytest.mark.slow
def test_docs_examples_run(tmp_path):
    script = "\n\n".join(python_blocks(DOC.read_text()))
    (tmp_path / "api_examples.py").write_text(script)
    env = {**os.environ, "GENSIS_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("GENSIS_CPU_BF16", None)  # as a user runs it: bf16 where the CPU has it (the suite pins fp32 elsewhere)
    p = subprocess.run([sys.executable, "api_examples.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=1200)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert "k-NN top-1" in p.stdout
    assert (tmp_path / "export" / "eldm" / "unet" / "config.json").is_file()
