"""Fidelity of the E-LDM on held-out images, measured in the conditioning encoder's own feature space.

For n held-out images x_i with embeddings e_i = f(x_i), one sample x̃_i = G(e_i, seed_i) each, ẽ_i = f(x̃_i):

(a) source retrieval   rank of i among the n real embeddings by cos(ẽ_i, e_j); top-1 / top-5 rate
                       (chance: 1/n, 5/n)
(b) label agreement    k-NN label of ẽ_i (cosine, weighted vote exp(cos/0.07) as DINO's k-NN, over the
                       labelled training-set embeddings) equals the label of x_i; reported beside the same
                       k-NN's accuracy on the real e_i (the ceiling) and the majority-class rate (chance)
(c) Fréchet distance   ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½) between {e_i} and {ẽ_i}; beside it the
                       same distance between {e_i} and n real training images (the real-vs-real floor)
"""

from __future__ import annotations

import time

import numpy as np
import torch

from gensis.errors import UserError

KNN_T = 0.07


def require_held_out(ds, data: str) -> None:
    """A UserError when the held-out images ``eldm sample`` / ``eval`` show are none (a torch 'stack expects a
    non-empty TensorList' traceback before): why, and what to give instead."""
    if len(ds) > 0:
        return
    size = getattr(ds, "source_size", None)
    why = f" of the {size} images" if size else ""
    base = data.split("@", 1)[0]
    raise UserError(f"no held-out image: the {getattr(ds, 'split', None) or 'val'} split{why} of {data} holds none (the "
                    f"split is per class); give more images, another data.val_fraction, or --data {base}@all")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float | None:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b`` (N, D); None when either has
    fewer than 2 rows (no covariance: one held-out image was scipy's 'Internal error in sqrtm' traceback)."""
    from scipy import linalg

    if len(a) < 2 or len(b) < 2:
        return None
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # as pytorch-fid: regularise a singular product
        off = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def retrieval_ranks(gen_emb: torch.Tensor, real_emb: torch.Tensor) -> torch.Tensor:
    """Rank (0 = first) of the source i among all real embeddings for each generated embedding i."""
    g = torch.nn.functional.normalize(gen_emb.float(), dim=1)
    r = torch.nn.functional.normalize(real_emb.float(), dim=1)
    sim = g @ r.T  # (n, n)
    own = sim.diagonal()[:, None]
    return (sim > own).sum(1)  # (n,)


def knn_predict(query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, k: int,
                num_classes: int) -> torch.Tensor:
    """DINO's weighted k-NN vote (cosine similarity, weights exp(s / 0.07))."""
    q = torch.nn.functional.normalize(query.float(), dim=1)
    b = torch.nn.functional.normalize(bank.float(), dim=1)
    sim, idx = (q @ b.T).topk(min(k, len(b)), dim=1)  # (n, k)
    votes = torch.zeros(len(q), num_classes)
    votes.scatter_add_(1, bank_labels[idx], (sim / KNN_T).exp())
    return votes.argmax(1)


@torch.no_grad()
def denoising_loss(gen, images: torch.Tensor, timesteps=(100, 300, 500, 700, 900), seed: int = 0,
                   batch_size: int = 100) -> dict:
    """Held-out diffusion loss with the condition and with the null condition, at fixed timesteps and noise.

    Cheap, low-variance convergence measure; ``cond_gain`` = loss(∅) − loss(c) is how much the model uses the
    embedding (0: it ignores it). ``images``: uint8 (N, 3, H, W). Returns per-timestep and mean values.
    """
    from gensis.eldm.autoencoder import to_model_space

    den, sched, ae = gen.denoiser, gen.schedule, gen.autoencoder
    out = {"t": list(timesteps), "cond": [], "uncond": []}
    for t_val in timesteps:
        lc = lu = 0.0
        for lo in range(0, len(images), batch_size):
            x = images[lo:lo + batch_size]
            from torchvision.transforms.v2 import functional as TF

            if x.shape[-1] != gen.image_size:
                x = TF.resize(x, [gen.image_size, gen.image_size], antialias=True)
            x0 = ae.encode(to_model_space(x, gen.device)).float()
            g = torch.Generator().manual_seed(seed * 7919 + t_val * 31 + lo)
            noise = torch.randn(x0.shape, generator=g).to(x0)
            t = torch.full((len(x0),), t_val, dtype=torch.long, device=x0.device)
            x_t, target = sched.add_noise(x0, noise, t), sched.target(x0, noise, t)
            c = den.condition(gen.encode(images[lo:lo + batch_size]).to(gen.device))
            lc += float((den(x_t, t, c).float() - target).pow(2).mean()) * len(x0)
            lu += float((den(x_t, t, den.null_context.expand_as(c)).float() - target).pow(2).mean()) * len(x0)
        out["cond"].append(lc / len(images))
        out["uncond"].append(lu / len(images))
    out["mean_cond"] = sum(out["cond"]) / len(timesteps)
    out["mean_uncond"] = sum(out["uncond"]) / len(timesteps)
    out["cond_gain"] = out["mean_uncond"] - out["mean_cond"]
    return out


def evaluate(gen, val_ds, train_ds=None, train_emb: torch.Tensor | None = None, n: int = 500, seed: int = 0,
             batch_size: int = 100, knn_k: int = 20, quiet: bool = False, **settings) -> dict:
    """The three fidelity numbers (module docstring) for ``n`` held-out images of ``val_ds``."""
    from gensis.data.loader import load_images
    from gensis.progress import progress

    rng = np.random.default_rng(seed)
    n = min(n, len(val_ds))
    idx = np.sort(rng.choice(len(val_ds), n, replace=False))
    s = gen.settings(**{k: v for k, v in settings.items() if k in ("guidance", "steps", "sampler", "eta")})
    t0 = time.time()
    real_emb, gen_emb = [], []
    bar = progress(total=n, desc="eldm eval", unit="img", disable=quiet)
    # whole micro-batches per call (the generator pads a partial one): 100 at 32 → 96, the same images
    micro = int(getattr(gen, "micro_batch", 1) or 1)
    batch_size = max(micro, batch_size // micro * micro)
    for lo in range(0, n, batch_size):
        chunk = idx[lo:lo + batch_size]
        images = load_images(val_ds, chunk, gen.image_size)  # (b, 3, S, S), as the E-LDM's training read them
        e = gen.encode(images)
        x = gen.generate(e, [seed * 1_000_003 + int(i) for i in chunk], s.guidance, s.steps, s.name, s.eta)
        real_emb.append(e)
        gen_emb.append(gen.encode(x))
        bar.update(len(chunk))
    bar.close()
    gen_seconds = time.time() - t0
    real_emb, gen_emb = torch.cat(real_emb), torch.cat(gen_emb)
    images = load_images(val_ds, idx[:256], gen.image_size)  # (≤256, 3, S, S)
    dl = denoising_loss(gen, images, seed=seed)
    ranks = retrieval_ranks(gen_emb, real_emb)
    out = {
        "n": n,
        "sampler": s.name, "steps": s.steps, "guidance": s.guidance, "eta": s.eta,
        "retrieval_top1": float((ranks < 1).float().mean()),
        "retrieval_top5": float((ranks < 5).float().mean()),
        "retrieval_chance_top1": 1.0 / n,
        "retrieval_chance_top5": min(5.0 / n, 1.0),
        "frechet_distance": frechet_distance(real_emb.numpy(), gen_emb.numpy()),
        "denoising_loss_cond": dl["mean_cond"], "denoising_loss_uncond": dl["mean_uncond"],
        "cond_gain": dl["cond_gain"],
        "generate_seconds": round(gen_seconds, 2),
        "images_per_s": round(n / max(gen_seconds, 1e-9), 2),
    }
    if train_ds is not None and train_emb is not None and len(train_emb) >= 2:
        m = min(n, len(train_emb))
        pick = np.sort(np.random.default_rng(seed + 1).choice(len(train_emb), m, replace=False))
        out["frechet_distance_real_vs_real"] = frechet_distance(real_emb.numpy(), train_emb[pick].numpy())
    if train_ds is not None and train_emb is not None and val_ds.labels is not None and train_ds.labels is not None:
        bank_labels = torch.from_numpy(train_ds.labels)
        c = int(max(train_ds.labels.max(), val_ds.labels.max())) + 1
        src = torch.from_numpy(val_ds.labels[idx])
        pred_gen = knn_predict(gen_emb, train_emb, bank_labels, knn_k, c)
        pred_real = knn_predict(real_emb, train_emb, bank_labels, knn_k, c)
        out["label_agreement"] = float((pred_gen == src).float().mean())
        out["label_knn_real"] = float((pred_real == src).float().mean())
        out["label_chance"] = float(np.bincount(val_ds.labels[idx]).max() / n)
    return out


def format_report(r: dict) -> str:
    lines = [f"E-LDM fidelity on {r['n']} held-out images ({r['sampler']} {r['steps']} steps, guidance {r['guidance']:g}):",
             f"  source retrieval  top-1 {r['retrieval_top1']:.3f}  top-5 {r['retrieval_top5']:.3f}   "
             f"(chance {r['retrieval_chance_top1']:.3f} / {r['retrieval_chance_top5']:.3f})"]
    if "label_agreement" in r:
        lines.append(f"  label agreement   {r['label_agreement']:.3f}   (k-NN on the real images: "
                     f"{r['label_knn_real']:.3f}; chance {r['label_chance']:.3f})")
    if r["frechet_distance"] is None:
        lines.append(f"  Frechet distance  -   (needs at least 2 held-out images, got {r['n']})")
    else:
        fd = f"  Frechet distance  {r['frechet_distance']:.3f}"
        if r.get("frechet_distance_real_vs_real") is not None:
            fd += f"   (real vs real: {r['frechet_distance_real_vs_real']:.3f})"
        lines.append(fd + "   [encoder feature space]")
    lines.append(f"  denoising loss    {r['denoising_loss_cond']:.4f} with the condition, "
                 f"{r['denoising_loss_uncond']:.4f} with the null condition (gain {r['cond_gain']:.4f})")
    lines.append(f"  sampling          {r['images_per_s']:.2f} images/s")
    return "\n".join(lines)


def evaluate_run(eldm, data: str, n: int | None = None, overrides=None, guidance: float | None = None,
                 steps: int | None = None, sampler: str | None = None, device: str = "auto", amp: str = "auto",
                 quiet: bool = False) -> dict:
    """``gensis eldm eval``: the fidelity numbers of a finished E-LDM run on ``data``'s val split (its train
    split: the k-NN bank; embeddings cached in the run's ``cache/``); settings: the run's ``eval`` section,
    then ``overrides``, then ``n``. Returns the JSON-ready result (``format_report`` prints it)."""
    from pathlib import Path

    from gensis.data.sources import open_data
    from gensis.eldm.model import HELD_OUT_DATA_KEYS, finished_run_config, load_generator
    from gensis.eldm.train import cached_embeddings

    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise UserError(f"--n must be an integer >= 1 (eval.n), got {n}")  # 0 meant eval.n, -3 numpy's traceback
    cfg = finished_run_config(eldm, overrides, reads=("eval", "cond.encode_batch_size", *HELD_OUT_DATA_KEYS),
                              command="gensis eldm eval")
    ev, d = cfg.eval, cfg.data
    skip = bool(d.skip_bad_images)  # as the run was trained (or a data.skip_bad_images override)
    val = open_data(data, "val", d.val_fraction, d.split_seed, skip_bad_images=skip)
    require_held_out(val, data)
    train_ds = open_data(data, "train", d.val_fraction, d.split_seed, skip_bad_images=skip)
    settings = {"guidance": guidance, "steps": steps, "sampler": sampler}
    gen = load_generator(eldm, device=device, amp=amp, **settings)
    train_emb = cached_embeddings(Path(eldm) / "cache", gen.encoder, train_ds, gen.device,
                                  int(cfg.cond.encode_batch_size), tag="eval-train")
    r = evaluate(gen, val, train_ds, train_emb, n=int(ev.n) if n is None else int(n), seed=int(ev.seed), batch_size=int(ev.batch_size),
                 knn_k=int(ev.knn_k), quiet=quiet, **settings)
    r["eldm"] = str(eldm)
    r["data"] = data
    r["generator_identity"] = gen.identity
    r["amp"] = "bf16" if gen.bf16 else "off"
    return r
