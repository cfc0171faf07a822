"""Everything a training ``Task`` keeps in memory (module weights and buffers, optimizer states, task tensors
such as DINO's center), copied, to compare two moments of a run bit for bit.

    box = capture_before_step(monkeypatch, PretrainTask, 5, run / "checkpoint.safetensors")
    ... run until it stops ...
    assert_same_state(box["before"], task_state(box["task"]))
"""

from __future__ import annotations

from pathlib import Path

import torch


def task_state(task) -> dict[str, torch.Tensor]:
    """Copies of the task's module state dicts, optimizer states (moments, step counts) and state tensors."""
    out = {}
    for name, module in task.state_modules().items():
        out.update({f"module.{name}.{k}": v.detach().clone() for k, v in module.state_dict().items()})
    for name, opt in task.state_optimizers().items():
        for idx, st in opt.state_dict()["state"].items():
            out.update({f"optim.{name}.{idx}.{k}": v.detach().clone() for k, v in st.items() if torch.is_tensor(v)})
    out.update({f"task.{k}": v.detach().clone() for k, v in task.state_tensors().items()})
    return out


def assert_same_state(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert sorted(want) == sorted(got)
    differ = [k for k in want if not torch.equal(want[k].cpu(), got[k].cpu())]
    assert not differ, f"{len(differ)} of {len(want)} tensors changed, e.g. {differ[:5]}"


def capture_before_step(monkeypatch, task_cls, step: int, checkpoint: Path) -> dict:
    """Wrap ``task_cls.schedule`` (called first in every iteration): at iteration ``step`` record the task's
    state (as the previous iteration left it) and the checkpoint's bytes; every iteration index is recorded."""
    box: dict = {"its": []}
    original = task_cls.schedule

    def schedule(self, it, epoch):
        box["its"].append(it)
        box["task"] = self
        if it == step:
            box["before"] = task_state(self)
            box["checkpoint"] = checkpoint.read_bytes()
        return original(self, it, epoch)

    monkeypatch.setattr(task_cls, "schedule", schedule)
    return box
