"""Full training state <-> one safetensors file (no pickles).

Module weights are stored under ``<name>.<param>``; an optimizer's per-parameter tensors under
``<name>.state.<index>.<key>``, and its ``param_groups`` (plain numbers) as JSON in the metadata, together
with any other JSON-able values (epoch, RNG states as tensors, ...).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from gensis.errors import UserError
from gensis.rundir import safetensors_name, save_tensors


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"{prefix}.state.{idx}.{k}"] = t
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str, groups: list) -> None:
    state: dict[int, dict] = {}
    pre = prefix + ".state."
    for name, t in tensors.items():
        if name.startswith(pre):
            idx, key = name[len(pre):].split(".", 1)
            state.setdefault(int(idx), {})[key] = t
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(path: str | Path, modules: dict[str, torch.nn.Module | dict], optimizers: dict[str, torch.optim.Optimizer],
                    tensors: dict[str, torch.Tensor] | None = None, meta: dict | None = None) -> None:
    """Atomically write modules' state dicts, optimizers' states, extra tensors and JSON metadata."""
    flat: dict[str, torch.Tensor] = {}
    groups = {}
    for name, m in modules.items():
        sd = m.state_dict() if isinstance(m, torch.nn.Module) else m
        flat.update({f"{name}.{k}": v for k, v in sd.items()})
    for name, opt in optimizers.items():
        t, g = optimizer_tensors(opt, f"optim.{name}")
        flat.update(t)
        groups[name] = g
    for k, v in (tensors or {}).items():
        flat[f"extra.{k}"] = v
    save_tensors(path, flat, {"json": json.dumps({"meta": meta or {}, "param_groups": groups})})


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Returns (all tensors by name, {'meta': ..., 'param_groups': ...}).

    A damaged file (torn by a disk error, edited, truncated) is one ``UserError`` line naming it: the stage
    cannot resume from it, and the user decides whether to delete it and start over.
    """
    try:
        with safetensors_name(path) as name, safe_open(name, framework="pt") as f:
            info = json.loads((f.metadata() or {}).get("json", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if not isinstance(info, dict) or not isinstance(info.get("meta", {}), dict) or "epoch" not in info.get("meta", {}):
            raise ValueError("no training state in its metadata")
    except Exception as e:
        raise UserError(f"checkpoint {path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                        f"delete it to restart this stage from scratch") from None
    return tensors, info


def sub_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    pre = prefix + "."
    return {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
