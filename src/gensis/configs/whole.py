"""The rules that combine keys of one stage's config (each key alone is ``gensis.config.validate``'s): a run
checks them before reading any data, and ``--print-config`` runs the same check, so that a config it prints
is one the run accepts. Each rule lives with the code that needs it; this module only says which apply."""

from __future__ import annotations

from typing import Any

#: the stages with rules of their own: pretraining, the E-LDM denoiser, the E-LDM autoencoder
STAGES = ("pretrain", "eldm", "eldm-ae")


def check_whole(stage: str, cfg: dict[str, Any]) -> None:
    """A one-line ``UserError`` when the resolved config ``cfg`` of ``stage`` (``pretrain``, ``eldm`` for
    ``eldm train``, ``eldm-ae`` for ``eldm train-ae``; others have no such rules) breaks a rule that combines
    keys, e.g. ``model.arch`` not a timm model, ``data.image_size`` not a multiple of the patch size, ``cond.tokens`` > 1 with ``cond.mode=time``."""
    if stage == "pretrain":
        from gensis.models.backbone import check_arch, check_patch_multiple, patch_size_of
        from gensis.ssl.methods import method_class

        check_arch(cfg["model"]["arch"])
        # local crops: their size depends on the method, checked when it is built
        check_patch_multiple({"data.image_size": cfg["data"]["image_size"]}, patch_size_of(cfg["model"]))
        method_class(cfg["method"]).check_config(cfg)
    elif stage == "eldm":
        from gensis.eldm.denoiser import check_tokens

        check_tokens(cfg["cond"]["tokens"], cfg["cond"]["mode"])
    elif stage == "eldm-ae":
        from gensis.eldm.train_ae import check_ae_size

        check_ae_size(cfg)
