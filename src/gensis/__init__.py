"""gensis: Gen-SIS (Generative Self-augmentation Improves Self-supervised Learning), end to end.

The public API (guide and runnable examples: docs/api.md); names are imported on first use, so
``import gensis`` stays fast:

    gensis.PretrainConfig / ELDMConfig / BankConfig / MILConfig   typed configs (dataclasses, the CLI's schema):
        .from_preset(preset, overrides), .from_dict(d), .to_dict(), .with_overrides(...), attribute access
    gensis.make_config(stage, preset, overrides)  the same, as a plain dict
    gensis.pretrain(data, out, ...)               DINO / Gen-DINO pretraining           -> run directory
    gensis.train_autoencoder(data, out, ...)      the E-LDM's VQ autoencoder            -> run directory
    gensis.train_eldm(encoder, data, out, ...)    the embedding-conditioned diffusion model -> run directory
    gensis.generate_bank(eldm, data, out, ...)    the augmentation bank                 -> bank folder
    gensis.eldm_figures(eldm, data, out) / gensis.evaluate_eldm(eldm, data)   E-LDM grids, fidelity numbers
    gensis.train_mil(feats, labels, out, ...)     ABMIL on slide bags (cross-validated) -> metrics
    gensis.load_encoder(run) / gensis.embed(encoder, images)      frozen encoder, (N, D) embeddings
    gensis.load_generator(run)                    E-LDM: encode / generate / interpolate
    gensis.open_bank(path) / gensis.BankDataset(path, transform=...)   a bank, as a torch Dataset
    gensis.open_data(spec, split) / gensis.as_image_set(obj)          datasets (ImageSet)
    gensis.knn(encoder, train, test)              DINO k-NN accuracy
    gensis.linear(encoder, train, test)           DINO linear probe (learning-rate sweep)
    gensis.evaluate(protocol, **options)          any `gensis eval` protocol (robustness, copydetect, davis, umap ...)
    gensis.export_model(run, to, out)             timm / safetensors / diffusers
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module holding it
_LAZY = {
    **{name: "gensis.api" for name in ("make_config", "pretrain", "train_autoencoder", "train_eldm",
                                        "generate_bank", "load_encoder", "embed", "load_generator", "open_bank",
                                        "knn", "linear", "export_model", "as_image_set", "eldm_figures",
                                        "evaluate", "evaluate_eldm", "train_mil")},
    **{name: "gensis.configs.typed" for name in ("PretrainConfig", "ELDMConfig", "BankConfig", "MILConfig")},
    "open_data": "gensis.data.sources",
    "ImageSet": "gensis.data.sources",
    "BankDataset": "gensis.data.torch_datasets",
    "ImageDataset": "gensis.data.torch_datasets",
    "Encoder": "gensis.models.encoder",
    "EmbeddingConditionedGenerator": "gensis.eldm.generator",
    "UserError": "gensis.errors",
}

if TYPE_CHECKING:
    from gensis.api import (as_image_set, eldm_figures, embed, evaluate, evaluate_eldm, export_model,
                            generate_bank, knn, linear, load_encoder, load_generator, make_config, open_bank,
                            pretrain, train_autoencoder, train_eldm, train_mil)
    from gensis.configs.typed import BankConfig, ELDMConfig, MILConfig, PretrainConfig
    from gensis.data.sources import ImageSet, open_data
    from gensis.data.torch_datasets import BankDataset, ImageDataset
    from gensis.eldm.generator import EmbeddingConditionedGenerator
    from gensis.errors import UserError
    from gensis.models.encoder import Encoder


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):  # a submodule, imported on first use as the names are: `gensis.api.pretrain_config`,
        from importlib.util import find_spec  # `gensis.rundir.MetricsLog` right after `import gensis`

        if find_spec(f"{__name__}.{name}") is not None:
            return import_module(f"{__name__}.{name}")  # (the import binds it in this module)
    raise AttributeError(f"module 'gensis' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(["__version__", *_LAZY])


__all__ = ["__version__", *_LAZY]
