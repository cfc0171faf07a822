"""Config keys added after runs were made, with the value that reproduces those runs (one registry per kind).

``ADDED[family][dotted key] = old value``: a run made before the key existed behaves exactly as one made with
the key at that value. Two readers use it, so that adding such a key to a ``base.yaml`` changes nothing a user
already has:

- ``--resume`` (``gensis.train.resume``): the key may be absent from the run's ``config.yaml`` when the new
  value is the old one (``Task.resume_added`` reads ``ADDED[Task.family]``);
- the demo's stage keys (``gensis.pipeline.runner``): ``without_added`` leaves such a key at its old value out
  of the resolved config the key hashes, so a finished demo stays up to date; any other value changes the key.

Rule: **a new key whose default reproduces older runs goes into ``ADDED`` in the same commit that adds it to
``base.yaml``** (with the commit or test that proves the default reproduces them). Register only keys added
after ``tests/cli/stage_keys_smoke.json`` was recorded: a key its recorded configs already hold is hashed in
the keys of today's demo folders, and registering it would change them (``tests/cli/test_stage_keys.py``
fails). Keys that only change speed or logging belong to ``gensis.train.resume.SPEED_ONLY`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ADDED: dict[str, dict[str, Any]] = {
    "pretrain": {
        # dinoopts: DINO's head without BatchNorm and softmax centering are what every DINO run before the keys
        # used (tests/ssl/test_dino_options.py checks the default model and loss are unchanged)
        "dino.use_bn_in_head": False,
        "dino.centering": "centering",
        # convstem: an empty list builds the same timm ViT as before the key (tests/models/test_conv_stem.py)
        "model.conv_stem": [],
        # mimetic: "timm" adds no step after timm's own initialisation (tests/models/test_mimetic_init.py)
        "model.init": "timm",
        # initargs: the values mimetic_init_ / sincos_pos_init_ used before the keys (tests/models/test_mimetic_init.py)
        "model.mimetic_qk": [0.7, 0.7],
        "model.mimetic_vo": [0.4, 0.4],
        "model.sincos_temperature": 10000.0,
        "model.sincos_scale": 1.0,
        # koleo: weight 0 adds no term, so the loss and its gradients are those of DINO before the key
        # (tests/ssl/test_dino_options.py)
        "dino.koleo_loss_weight": 0.0,
        "ibot.koleo_loss_weight": 0.0,  # the same for iBOT (tests/ssl/test_dino_options.py)
        # skqueue: no queue registers no buffer and leaves Sinkhorn-Knopp on the batch alone (tests/ssl/test_dino_options.py)
        "dino.sk_queue": 0,
        # minupdates: no floor trains exactly optim.epochs, as before the key (tests/train/test_budget.py)
        "optim.min_updates": None,
    },
    "eldm": {
        # d471ef7: one context token is the Conditioner of every run before the key (same parameters, initial
        # weights and outputs bit for bit: tests/eldm/test_tokens.py); the only key added to a base.yaml since
        # the stage-key fixture was recorded (checked by diffing its configs with today's resolution)
        "cond.tokens": 1,
        # minupdates: no floor trains exactly optim.epochs / ae.optim.epochs, as before the keys (tests/train/test_budget.py)
        "optim.min_updates": None,
        "ae.optim.min_updates": None,
    },
    "bank": {},
    "mil": {},
}


def added_keys(family: str) -> Mapping[str, Any]:
    """``{dotted key: the value that reproduces runs made before it}`` of a config family; loud on unknown."""
    if family not in ADDED:
        raise KeyError(f"no config family '{family}' in gensis.configs.added.ADDED; families: {', '.join(ADDED)}")
    return ADDED[family]


def reproduces_old(old: Any, value: Any) -> bool:
    """True when ``value`` is the registered ``old`` value (a bool never equals an int here)."""
    return isinstance(value, bool) == isinstance(old, bool) and bool(value == old)


def without_added(family: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the resolved ``cfg`` without the registered keys that hold their old value (a section that
    only held such keys goes too): what a stage key hashes, equal to the config of before the keys existed."""
    drop = {k for k, old in added_keys(family).items() if _has(cfg, k) and reproduces_old(old, _get(cfg, k))}
    return _copy_without(cfg, drop, "")


def _has(cfg: Mapping[str, Any], key: str) -> bool:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _copy_without(node: Mapping[str, Any], drop: set[str], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in node.items():
        path = f"{prefix}{k}"
        if path in drop:
            continue
        if isinstance(v, Mapping):
            sub = _copy_without(v, drop, path + ".")
            if sub or not any(d.startswith(path + ".") for d in drop):
                out[k] = sub  # a section emptied only by dropped keys did not exist before them
            continue
        out[k] = v
    return out
