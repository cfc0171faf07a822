"""``gensis.data.loader.check_training_batch``: the trainers' shared check of the batch against the data."""

import pytest

from gensis.data.loader import check_training_batch
from gensis.errors import UserError


def test_no_training_image_is_said_so_not_a_batch_of_at_most_zero():
    """`eldm train --data X@val` of a split holding no image said 'set a smaller batch (optim.batch_size=N,
    N <= 0)', which no batch satisfies; now it says the split holds none."""
    with pytest.raises(UserError, match=r"no training image \(its split holds none\)") as e:
        check_training_batch(0, 32, 1, None)
    assert "N <= 0" not in str(e.value)
    with pytest.raises(UserError, match="N <= 5"):
        check_training_batch(5, 32, 1, None)
    check_training_batch(32, 32, 1, None)
