"""Shared fixtures: run `fastdqn train` in-process and read its result back."""
from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core (dev.py test): one thread each,
    os.environ["OMP_NUM_THREADS"] = "1"   # the train processes they start included

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

from fastdqn.cli import main
from fastdqn.results import load_result


@pytest.fixture
def run_train(tmp_path):
    """run_train(*args) -> result dict. Runs `fastdqn train ARGS --out <tmp>/r.json` on the CPU
    without a progress bar, asserts exit code 0 and returns the validated result."""

    def run(*args: str) -> dict:
        out = tmp_path / "r.json"
        argv = ["train", *args, "--device", "cpu", "--progress", "false", "--out", str(out)]
        assert main(argv) == 0
        return load_result(out)

    return run


@pytest.fixture
def one_torch_thread():
    """Runs torch on one intra-op thread for the test, then restores the count. On a shared 2-core
    machine the spin-waits of 2 threads made training runs several times slower (measurements:
    results/amd-epyc-2c/torch_threads.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
