"""``gensis demo pretrain.optim.epochs=5 eldm.optim.epochs=4 bank.gen.num_generative=2``: config overrides for the stages of
a pipeline, each prefixed by the config family it changes.

The part after the prefix is an ordinary ``key=value`` override of that family (what ``gensis pretrain``,
``gensis eldm train`` and ``gensis bank generate`` take), checked by the same ``gensis.config.load_config`` (same
rules, same one-line errors). Keys the pipeline sets itself (the method, the seeds, the disentanglement source
of each variant, the bank's split) are refused with the option that sets them. The overrides join each stage's
resolved config, which its key hashes, so changing one redoes that stage and those that read it; without
overrides every config, key and printed command is what it was before overrides existed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from gensis.errors import UserError

EXAMPLE = "pretrain.optim.epochs=5"

_BANK_DATA = {f"data.{k}": f"use pretrain.data.{k} (the bank covers exactly the images pretraining reads)"
              for k in ("limit", "val_fraction", "split_seed")}

# keys a pipeline sets itself, per family -> the rest of the refusal line (what sets them), one table per demo:
# ``gensis demo`` ...
PIPELINE_KEYS = {
    "pretrain": {"method": "use --methods", "gen.interp": "use the demo's variants (X | X w/ pixel disent. | Gen-X)",
                 "train.seed": "use --seed / --seeds"},
    "eldm": {"train.seed": "use --seed / --seeds"},
    "bank": {"gen.seed": "use --seed / --seeds", **_BANK_DATA},
}

# ... and the slide demo (``gensis wsi demo`` = ``gensis demo --preset wsi``): one seed, DINO against Gen-DINO
WSI_PIPELINE_KEYS = {
    "pretrain": {"method": "its columns are DINO and Gen-DINO (`gensis demo --methods` compares other methods)",
                 "gen.interp": "its columns are DINO (no interpolation) and Gen-DINO (the bank's)",
                 "train.seed": "use --seed"},
    "eldm": {"train.seed": "use --seed"},
    "bank": {"gen.seed": "use --seed", **_BANK_DATA},
    "mil": {"cv.seed": "use --seed"},
}
# sections of a family that no stage of the slide demo reads (it has no E-LDM evaluation or figures stage): an
# override of them would change nothing, so it is refused like a typo -> what reads them instead
WSI_UNREAD = {
    "eldm": {"eval": "the slide demo has no E-LDM evaluation stage (`gensis eldm eval --eldm OUT/eldm` takes eval.*)",
             "figures": "the slide demo has no E-LDM figures stage (`gensis eldm sample --eldm OUT/eldm` takes "
                        "figures.*)"},
}


def split_overrides(items: Iterable[str], families: Sequence[str] = ("pretrain", "eldm", "bank"),
                    pipeline_keys: Mapping[str, Mapping[str, str]] = PIPELINE_KEYS,
                    unread: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, list[str]]:
    """``["pretrain.optim.epochs=5", "bank.gen.k=2"]`` -> ``{"pretrain": ["optim.epochs=5"], "eldm": [],
    "bank": ["gen.k=2"]}`` (order kept); a UserError for a missing or unknown prefix, a key the pipeline sets
    (``pipeline_keys``: that demo's table, ``PIPELINE_KEYS`` or ``WSI_PIPELINE_KEYS``) or a key of a section no
    stage of that demo reads (``unread``: ``WSI_UNREAD`` for the slide demo)."""
    from gensis.config import dotted_keys, parse_overrides

    out: dict[str, list[str]] = {f: [] for f in families}
    for item in items:
        key = item.split("=", 1)[0].strip()
        if "=" not in item:
            raise UserError(f"override '{item}' must look like STAGE.key=value (e.g. {EXAMPLE})")
        family, _, rest = key.partition(".")
        if family in out and not rest:
            raise UserError(f"override '{item}': name a {family} config key after '{family}.' (e.g. {EXAMPLE})")
        if family not in out:
            raise UserError(f"override '{item}': unknown stage prefix '{family}'; valid prefixes: "
                            f"{', '.join(families)} (e.g. {EXAMPLE})")
        body = item.split(".", 1)[1].lstrip()
        for k in dotted_keys(parse_overrides([body])):
            if k in pipeline_keys.get(family, {}):
                raise UserError(f"override '{item}': the demo sets {family}.{k} itself; "
                                f"{pipeline_keys[family][k]}")
            if k in (unread or {}).get(family, {}):
                raise UserError(f"override '{item}': nothing in this demo reads {family}.{k}.*: "
                                f"{(unread or {})[family][k]}")
        out[family].append(body)
    return out


def check_overrides(by_family: Mapping[str, Sequence[str]], preset: str, methods: Sequence[str] = ("dino",),
                    presets: Mapping[str, str] | None = None) -> None:
    """Resolve each family's config with its overrides (``load_config``: the checks of ``gensis pretrain`` ...
    key=value), for every method the pretraining stages use, before any stage runs. A bad key or value is the
    same one-line error, naming the prefix it came with."""
    from gensis.config import load_config

    for family, items in by_family.items():
        if not items:
            continue
        where = f"the demo's {family}.* overrides"
        for extra in ([[] if m == "dino" else [f"method={m}"] for m in methods] if family == "pretrain" else [[]]):
            try:
                cfg = load_config(family, (presets or {}).get(family, preset), [*extra, *items], where=where)
                if family == "pretrain":  # as `gensis pretrain` checks it before reading an image (was: at the stage)
                    from gensis.configs.whole import check_whole

                    check_whole("pretrain", cfg)
            except UserError as e:
                raise UserError(str(e) if "(in " in str(e) else f"{e} (in {where})") from None

