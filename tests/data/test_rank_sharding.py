"""Under torchrun each rank's batches are its slice of the one-process batches (``optim.batch_size`` is the total):
together the ranks see every image of an epoch once, none twice, in the order one process would, and drop the
same last partial batch."""

import numpy as np
import pytest

from gensis.data.loader import epoch_indices


@pytest.mark.parametrize("n, batch, world", [(76, 16, 2), (100, 12, 4), (64, 8, 8), (65, 32, 2)])
def test_ranks_split_each_one_process_batch(n, batch, world):
    for epoch in (0, 3):
        one = epoch_indices(n, batch, epoch, seed=7)
        ranks = [epoch_indices(n, batch, epoch, seed=7, rank=r, world=world) for r in range(world)]
        assert all(len(r) == len(one) == n // batch for r in ranks)
        for b, whole in enumerate(one):
            parts = [r[b] for r in ranks]
            assert all(len(p) == batch // world for p in parts)
            assert np.array_equal(np.concatenate(parts), whole)  # the same images, each once
        seen = np.concatenate([np.concatenate(r) for r in ranks])
        assert len(seen) == len(set(seen.tolist())) == (n // batch) * batch
    first, second = (np.concatenate(epoch_indices(n, batch, e, seed=7)) for e in (0, 1))
    assert not np.array_equal(first, second)  # a new order every epoch
