"""How much of its source's class the E-LDM's autoencoder keeps, in the conditioning encoder's space (docs/eldm.md,
"Starting from the source image instead of from noise"): 500 validation images (the eval's seed-0 draw), their
reconstructions (encode -> decode, quantized), and the 20-NN label agreement and source retrieval of each,
as ``gensis eldm eval`` measures its samples.

    python benchmarks/ae_ceiling.py ELDM_RUN DATA.npz
"""

import sys

import numpy as np
import torch
from gensis.eldm import load_generator
from gensis.eldm.evaluate import knn_predict, retrieval_ranks
from gensis.data.loader import load_images
from gensis.data.sources import open_data
from gensis.eldm.autoencoder import to_uint8
torch.set_num_threads(1)
eldm, data = sys.argv[1], sys.argv[2]
g = load_generator(eldm)
tr = open_data(data, "train", 0.2, 0, None); va = open_data(data, "val", 0.2, 0, None)
idx = np.sort(np.random.default_rng(0).choice(len(va), 500, replace=False))
def emb(ds, ix):
    out = []
    for lo in range(0, len(ix), 250):
        out.append(g.encode(load_images(ds, ix[lo:lo+250], g.image_size)))
    return torch.cat(out)
tre = emb(tr, np.arange(len(tr))); trl = torch.as_tensor(np.asarray(tr.labels))
x = load_images(va, idx, g.image_size); vl = torch.as_tensor(np.asarray(va.labels))[idx]
e = g.encode(x)
ncls = int(trl.max()) + 1
def report(name, xe):
    acc = (knn_predict(xe, tre, trl, 20, ncls) == vl).float().mean().item()
    r = retrieval_ranks(xe, e)
    print(f"{name:30s} label {acc:.3f}  top1 {(r==0).float().mean():.3f} top5 {(r<5).float().mean():.3f}", flush=True)
report("real", e)
with torch.no_grad():
    rec = to_uint8(g.autoencoder.decode(g.autoencoder.encode(x.float()/127.5-1)).clamp(-1,1))
report("AE reconstruction", g.encode(rec))
