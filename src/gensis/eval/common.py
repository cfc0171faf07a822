"""Pieces shared by the evaluations: labels, and the identities written into result files."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np

from gensis.errors import UserError

if TYPE_CHECKING:
    from gensis.data.sources import ImageSet

_F = TypeVar("_F", bound=Callable[..., Any])


def no_grad(fn: _F) -> _F:
    """``torch.no_grad()`` as a decorator that imports torch only when ``fn`` runs (``gensis eval --help``
    stays free of torch)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def labels_of(ds, role: str) -> np.ndarray:
    """The integer labels of a dataset; a UserError when it has none (evaluations need labels)."""
    if len(ds) == 0:
        why = ""
        if getattr(ds, "split", None) and getattr(ds, "source_size", None):  # a split too small to hold an image
            why = (f": its {ds.split} split of the {ds.source_size} images holds none (the split is per class); give "
                   f"more images, another --val-fraction, or --train/--test DATA@all")
        raise UserError(f"{role} dataset '{ds.name}' is empty{why}")
    if ds.labels is None:
        raise UserError(f"{role} dataset '{ds.name}' has no labels; evaluation needs labelled images")
    return np.asarray(ds.labels, dtype=np.int64)


def warn_if_test_is_train(train_ds, test_ds, role: str = "test",
                          hint: str = "test on other images (e.g. DATA@train and DATA@val)") -> bool:
    """A warning line (stderr) when the test images are the training images (``X@all`` twice, the same object):
    every test image then finds itself, so the score is not a held-out one; or when some of them are (``--train
    X@all --test X@val``: the same files or the same rows of one array), or copies of them (files of the same class
    folder, name and size: a test folder made with cp, not mv). Returns whether they are all.
    ``role`` names the scored set in the line (``test``, an ``--ood`` folder), ``hint`` ends it."""
    import sys

    same = train_ds is test_ds or (len(train_ds) == len(test_ds) and train_ds.identity == test_ds.identity)
    if same:
        print(f"gensis: warning: the {role} set is the training set ({test_ds.name}, {len(test_ds)} images): each "
              f"image is scored against itself, so this is not a held-out accuracy; {hint}", file=sys.stderr)
        return True
    train_keys, test_keys = image_keys(train_ds), image_keys(test_ds)
    if train_keys is not None and test_keys is not None:
        shared = len(set(test_keys) & set(train_keys))
        if shared:
            print(f"gensis: warning: {shared:,} of the {len(test_ds):,} {role} images ({test_ds.name}) are also "
                  f"training images ({train_ds.name}): each of those is scored against itself, so this is not a "
                  f"held-out accuracy; {hint}", file=sys.stderr)
            return False
    copied = 0 if train_keys is None or test_keys is None else count_copies(train_keys, test_keys)
    if copied:  # cp instead of mv when a test folder was made
        print(f"gensis: warning: {copied:,} of the {len(test_ds):,} {role} images ({test_ds.name}) have the "
              f"folder, file name and size of a training image ({train_ds.name}): copies of them (a test folder made "
              f"with cp, not mv)? each such image is scored against its copy, so this is not a held-out accuracy; "
              f"{hint}", file=sys.stderr)
    return False


def count_copies(train_keys: list[Any], test_keys: list[Any]) -> int:
    """How many test files (``image_keys`` of folders: paths) have a training file of the same class folder name,
    file name and size: copied files. Only same-named files are stat'ed (ImageNet's 1.3 M are not)."""
    by_name = {(os.path.basename(os.path.dirname(k)), os.path.basename(k)): k for k in train_keys if isinstance(k, str)}
    copied = 0
    for k in test_keys:
        twin = by_name.get((os.path.basename(os.path.dirname(k)), os.path.basename(k))) if isinstance(k, str) else None
        try:
            copied += twin is not None and os.path.getsize(k) == os.path.getsize(twin)
        except OSError:
            continue
    return copied


def image_keys(ds) -> list[Any] | None:
    """One key per image of ``ds`` naming where it is stored: its file (an image folder) or its row of an array
    (with the array's content hash), through subsets and relabellings; None where that is not known (tiles,
    a user's objects)."""
    from gensis.data.sources import ArrayImageSet, FolderImageSet, RelabelledImageSet, SubsetImageSet

    idx, node = np.arange(len(ds)), ds
    while isinstance(node, (SubsetImageSet, RelabelledImageSet)):
        if isinstance(node, SubsetImageSet):
            idx = node.indices[idx]
        node = node.parent
    if isinstance(node, FolderImageSet):
        return [os.path.abspath(node.paths[int(i)]) for i in idx]
    if isinstance(node, ArrayImageSet):
        return [(node.identity, int(i)) for i in idx]
    return None


def warn_unseen_test_classes(test_ds, y_train: np.ndarray, y_test: np.ndarray) -> int:
    """A warning line (stderr) when some test images have a class no training image has (integer labels of two
    unnamed sources, a class held out whole by a split or ``data.limit``): no classifier trained on those images
    can name it, so top-1 has a ceiling below 100 %. Returns how many test images that is."""
    unseen = np.setdiff1d(np.unique(y_test), np.unique(y_train))
    n = int(np.isin(y_test, unseen).sum())
    if n:
        import sys

        names = [test_ds.classes[int(c)] if test_ds.classes and int(c) < len(test_ds.classes) else str(int(c))
                 for c in unseen]
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        print(f"gensis: warning: {n:,} of the {len(y_test):,} test images ({test_ds.name}) are of "
              f"{'a class' if len(names) == 1 else f'{len(names)} classes'} no training image has ({shown}): they "
              f"cannot be classified right, so top-1 is at most {100 * (1 - n / len(y_test)):.1f} %", file=sys.stderr)
    return n


def num_classes_of(train_ds, test_ds, y_train: np.ndarray, y_test: np.ndarray) -> int:
    return max(train_ds.num_classes, test_ds.num_classes, int(max(y_train.max(), y_test.max())) + 1)


def describe_data(ds) -> dict:
    """Name, identity (content hash), size and class count of a dataset, for result files; where a split was
    taken by ``open_train_test``, the ``val_fraction`` and ``split_seed`` that make it again."""
    out = {"name": ds.name, "identity": ds.identity, "size": len(ds), "num_classes": ds.num_classes,
           "split": getattr(ds, "split", None), "source_size": getattr(ds, "source_size", None)}
    for key in ("val_fraction", "split_seed"):
        if getattr(ds, key, None) is not None:
            out[key] = getattr(ds, key)
    return out


def describe_encoder(encoder) -> dict:
    """Name, identity (weights hash or baseline name), feature dimension and input size of an encoder."""
    return {"name": encoder.name, "identity": encoder.identity, "dim": encoder.dim,
            "image_size": encoder.image_size}


def open_train_test(train: str, test: str | None, val_fraction: float = 0.2, split_seed: int = 0,
                    skip_bad_images: bool = False) -> tuple[ImageSet, ImageSet]:
    """(train_ds, test_ds) for ``--train``/``--test``, the test labels matched to train's classes by name.

    One source (``--test`` absent or naming the same data): its train and val splits, unless a split is
    named (``DATA@train``, ``@val``, ``@all``). Two different sources: each is used whole unless a split
    is named. ``skip_bad_images``: unreadable images are left out (and counted), as the run's pretraining did.
    """
    from gensis.data.sources import DataSpec, match_classes, open_data

    same = test is None or DataSpec.parse(test).source == DataSpec.parse(train).source
    train_ds = open_data(train, "train" if same else "all", val_fraction, split_seed, skip_bad_images=skip_bad_images)
    test_ds = match_classes(train_ds, open_data(test or train, "val" if same else "all", val_fraction, split_seed,
                                                skip_bad_images=skip_bad_images))
    for ds in (train_ds, test_ds):  # recorded in result files (describe_data): the split is made again from them
        if getattr(ds, "split", None) in ("train", "val"):
            ds.val_fraction, ds.split_seed = val_fraction, split_seed
    return train_ds, test_ds


def split_note(train: dict, test: dict) -> str | None:
    """One line saying how many images were scored when a split was taken (None when both are whole).

    ``train``/``test`` are ``describe_data`` dicts (as in result files)."""
    parts = []
    for role, d in (("scored", test), ("trained on", train)):
        if d.get("split") and d.get("source_size"):
            parts.append(f"{role} {d['size']:,} of the {d['source_size']:,} images of "
                         f"{d['name'].rsplit('@', 1)[0]} (its {d['split']} split)")
    if not parts:
        return None
    return "; ".join(parts) + "; name a split (DATA@all) to change it"


# ---------------------------------------------------------------------------------------------------------
# options of the classification protocols (knn, linear, robustness)

DEFAULT_DATA = "builtin:animal-mnist"  # the baselines' data (pixels, random, timm:) when --train is not given
GIVE_DATA = "--train DATA (and --test DATA) to say which labelled images to evaluate on"
PASS_DATA = f"pass {GIVE_DATA}"


def add_data_options(p) -> None:
    p.add_argument("--train", default=None, metavar="DATA",
                   help="labelled training data: builtin:NAME, an ImageFolder folder or an .npz; DATA@train, "
                        "@val or @all picks a split (default: the data the --encoder run, or the --random-like run "
                        f"of --encoder random, was pretrained on, as its manifest records; {DEFAULT_DATA} for the "
                        "pixels, random and timm: encoders)")
    p.add_argument("--test", default=None, metavar="DATA",
                   help="labelled test data (same forms; default: the --train data). One source: its train "
                        "and val splits; two different sources: each whole, unless a split is named")
    p.add_argument("--val-fraction", type=float, default=None, metavar="F",
                   help="held-out share for data without its own split (default: the run's data.val_fraction, "
                        "else 0.2)")
    p.add_argument("--split-seed", type=int, default=None, metavar="SEED",
                   help="seed of that split (default: the run's data.split_seed, else 0)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out (and count) unreadable images (empty, truncated, corrupt) of --train, --test "
                        "(and robustness' --ood), as data.skip_bad_images=true does in training; default: an "
                        "unreadable image is an error, except "
                        "on the data of an --encoder run pretrained with data.skip_bad_images=true, which is read as "
                        "its pretraining read it")


def is_run_encoder(spec: str) -> bool:
    """Whether ``--encoder spec`` names a pretraining run folder (not a baseline or a timm: weights file)."""
    return spec not in ("pixels", "random") and not spec.startswith("timm:")


def data_run(args, encoder: str | None = None) -> str | None:
    """The pretraining run whose data and split are the defaults for ``encoder`` (default: ``args.encoder``): that
    run, or for ``--encoder random --random-like RUN`` that RUN (the random-init baseline of a run is scored on the
    run's data); else None."""
    enc = str(args.encoder if encoder is None else encoder)
    if is_run_encoder(enc):
        return enc
    like = getattr(args, "random_like", None)
    return str(like) if enc == "random" and like is not None else None


def check_random_like(like: str | None) -> None:
    """``--random-like RUN``: a UserError unless RUN is a pretraining run (its config.yaml gives the architecture)."""
    if like is None:
        return
    from gensis.folder_kind import require_kind

    require_kind(like, "pretrain", "--random-like")
    if not (Path(like) / "config.yaml").is_file():
        raise UserError(f"--random-like {like}: not a pretraining run (no config.yaml)")


def default_data(args, encoder: str, roles: str, flag: str, give: str) -> tuple[str, bool]:
    """``(source, from_run)``: the data ``encoder`` is evaluated on when the command's data option (``flag``, e.g.
    ``--train``) is not given: the data its run (``data_run``) was pretrained on, as the run's manifest records it,
    or ``DEFAULT_DATA`` for the baselines; one line on stdout (``roles: SOURCE (...)``) says which. ``give``
    completes the errors' "pass ..." (the options that give the data instead)."""
    run = data_run(args, encoder)
    if run is None:
        print(f"{roles}: {DEFAULT_DATA} (the default for --encoder {encoder.split('=', 1)[0]}; {flag} DATA to change)",
              flush=True)
        return DEFAULT_DATA, False
    from gensis.models.encoder import check_encoder_run

    from gensis.data.recorded import recorded_data

    if run == encoder:
        check_encoder_run(encoder, getattr(args, "backbone", "teacher"))  # a wrong --encoder is named before its data
    else:
        check_random_like(run)
    source = recorded_data(run, give)
    print(f"{roles}: {source} (from the run's manifest)", flush=True)
    return source, True


def recorded_data_error(run: str | None, source: str, error: UserError, give: str) -> UserError:
    """The one-line error when the data a run was pretrained on (``source``, from its manifest) cannot be
    evaluated on (moved, unlabelled, an object of another Python session ...)."""
    return UserError(f"cannot evaluate on the data {run} was pretrained on ({source}, from its manifest): {error}; "
                     f"pass {give}")


def resolve_data(args) -> tuple[str, str | None, bool]:
    """``(train, test, from_run)``: ``--train``/``--test`` as given; without ``--train``, ``default_data`` of the
    ``--encoder`` (the data its run, or the ``--random-like`` run of ``--encoder random``, was pretrained on, or
    ``DEFAULT_DATA`` for the other baselines), announced in one line. ``from_run``: the data came from the run's
    manifest."""
    if args.train is not None:
        return args.train, args.test, False
    roles = "train/test" if args.test is None else "train"
    source, from_run = default_data(args, str(args.encoder), roles, "--train", GIVE_DATA)
    return source, args.test, from_run


def split_defaults(args) -> tuple[float, int]:
    """The pretraining run's split (so its held-out images stay held out), else 0.2 / seed 0."""
    val_fraction, split_seed = 0.2, 0
    run = data_run(args)
    if run is not None and (Path(run) / "config.yaml").is_file():
        from gensis.rundir import RunDir

        data = RunDir(run).config().get("data", {})
        val_fraction = float(data.get("val_fraction", val_fraction))
        split_seed = int(data.get("split_seed", split_seed))
    if args.val_fraction is not None:
        val_fraction = args.val_fraction
    if args.split_seed is not None:
        split_seed = args.split_seed
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    return val_fraction, split_seed


def prepare_classification(args):
    """(encoder, train_ds, test_ds, device, cache) from the shared options; user mistakes raise UserError."""
    from gensis.eval.options import feature_cache, open_encoder, setup_runtime

    like = getattr(args, "random_like", None)
    if like is not None and str(args.encoder) != "random":
        raise UserError(f"--random-like {like} sets the architecture of --encoder random; --encoder is {args.encoder}")
    device = setup_runtime(args)
    val_fraction, split_seed = split_defaults(args)
    train, test, from_run = resolve_data(args)
    skip_flag = bool(getattr(args, "skip_bad_images", False))
    if not from_run:
        train_ds, test_ds = open_train_test(train, test, val_fraction, split_seed, skip_flag)
    else:
        from gensis.rundir import RunDir

        run = RunDir(str(data_run(args)))
        skip = skip_flag or ((run / "config.yaml").is_file()
                             and bool(run.config().get("data", {}).get("skip_bad_images", False)))
        try:  # the run's own images, read as its pretraining read them (data.skip_bad_images)
            train_ds, test_ds = open_train_test(train, test, val_fraction, split_seed, skip)
            labels_of(train_ds, "train"), labels_of(test_ds, "test")
        except UserError as e:  # moved, unlabelled (tiles), an object of another Python session ...
            raise recorded_data_error(data_run(args), train, e, GIVE_DATA) from None
        _warn_if_changed(args, train_ds)
    if is_run_encoder(str(args.encoder)):
        warn_if_pretrained_on_test(str(args.encoder), test_ds)
    encoder = open_encoder(args.encoder, args, device=device)
    return encoder, train_ds, test_ds, device, feature_cache(args)


def warn_if_pretrained_on_test(run: str, test_ds) -> int:
    """A warning line (stderr) counting the test images that ``run`` was pretrained on (``pretrain --data X@all``,
    then scored on X's val split: the encoder has seen them, so the score is not a held-out one); their number.
    Compared by file (folders) or array row (``image_keys``); nothing is said where the run's images cannot be
    opened again (moved, another session's object) or are not comparable (tiles)."""
    from gensis.data.sources import open_data
    from gensis.rundir import RunDir

    test_keys = image_keys(test_ds)
    rd = RunDir(run)
    spec = rd.manifest().get("inputs", {}).get("data") if rd.exists() else None
    if test_keys is None or not isinstance(spec, str) or not (rd / "config.yaml").is_file():
        return 0
    d = rd.config().get("data", {})
    try:
        seen = open_data(spec, "train", float(d.get("val_fraction", 0.2)), int(d.get("split_seed", 0)),
                         d.get("limit"), bool(d.get("skip_bad_images", False)))
    except (UserError, OSError, ValueError, TypeError):
        return 0
    seen_keys = image_keys(seen)
    shared = 0 if seen_keys is None else len(set(test_keys) & set(seen_keys))
    if shared:
        import sys

        print(f"gensis: warning: {shared:,} of the {len(test_ds):,} test images ({test_ds.name}) are images {run} was "
              f"pretrained on ({spec}): the encoder has seen them, so this is not a held-out accuracy; pretrain on "
              f"DATA@train (the default) to keep DATA@val held out", file=sys.stderr)
    return shared


def _warn_if_changed(args, train_ds) -> None:
    """A warning when the run's data source now holds other images than those it was pretrained on (compared
    where the split is the one pretraining read: the run's own split settings, its data.limit applied)."""
    from gensis.data.sources import DataSpec, apply_limit
    from gensis.rundir import RunDir

    run = data_run(args)
    rd = RunDir(str(run))
    inputs, cfg = rd.manifest().get("inputs", {}), rd.config().get("data", {})
    recorded = inputs.get("data_identity")
    split = DataSpec.parse(str(inputs.get("data"))).split
    if (recorded is None or split not in (None, "train") or cfg.get("skip_bad_images")
            or args.val_fraction is not None or args.split_seed is not None):
        return
    seen = apply_limit(train_ds, cfg.get("limit"), int(cfg.get("split_seed", 0))).identity
    if seen != recorded:
        import sys

        print(f"gensis: warning: {inputs['data']} now holds other images than {run} was pretrained on "
              f"(content hash {seen}, the manifest records {recorded}); {PASS_DATA}", file=sys.stderr)


def header_lines(title: str, res: dict) -> list[str]:
    e, tr, te = res["encoder"], res["train"], res["test"]
    return [f"{title}  encoder: {e['name']} ({e['identity']}, {e['dim']}-d)",
            f"train: {tr['name']} ({tr['size']} images, {tr['identity']})  "
            f"test: {te['name']} ({te['size']} images, {te['identity']})"]


def footer_lines(res: dict) -> list[str]:
    note = split_note(res["train"], res["test"])
    lines = [note] if note else []
    classes = res["train"].get("num_classes")
    if classes == 1:  # top-1 too: every image gets the only class (the note below said "read top-1")
        lines.append("one class: top-1 and top-5 are 100% by construction, whatever the encoder; evaluate on "
                     "images of two classes or more")
    elif isinstance(classes, int) and 0 < classes <= 5:  # top-5 holds every class: 100% whatever the encoder
        ks = [r["k"] for r in res.get("results", []) if isinstance(r.get("k"), int)]  # k-NN: min(5, k) classes
        if ks and min(ks) < classes:
            lines.append(f"top-5 counts the min(5, k) top-ranked classes: with {classes} classes it is 100% by "
                         f"construction for k >= {classes}: read top-1")
        else:
            lines.append(f"top-5 is 100% by construction with {classes} classes (<= 5): read top-1")
    return lines
