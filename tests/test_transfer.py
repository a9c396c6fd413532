"""Host-to-device copies: the pinned staging path gives exactly what the plain copy gives, also
when its buffers are reused while earlier copies may still be in flight (CUDA only: page-locked
memory needs a CUDA device); the plain path works everywhere."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdqn.transfer import POOL, PinnedStaging, make_to_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_plain_copy_on_cpu():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    t = make_to_device(torch.device("cpu"), pinned=False)(a)
    assert t.dtype == torch.uint8 and t.tolist() == a.tolist()


def test_pinned_staging_refuses_a_cpu_device():
    with pytest.raises(ValueError, match="CUDA"):
        PinnedStaging(torch.device("cpu"))


@cuda
def test_pinned_copies_equal_plain_ones_with_reuse():
    dev = torch.device("cuda")
    staging = make_to_device(dev, pinned=True)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (256, 4, 84, 84), dtype=np.uint8) for _ in range(3 * POOL)]
    out = [staging(a) for a in arrays]  # more copies than buffers: every buffer is reused
    torch.cuda.synchronize()
    for a, t in zip(arrays, out):
        assert t.device.type == "cuda" and torch.equal(t.cpu(), torch.from_numpy(a))
    assert all(buf.is_pinned() for pool in staging.pools.values() for buf, _ in pool)
    assert len(staging.pools) == 1  # one pool per shape, allocated once
