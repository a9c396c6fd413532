"""The environment keeps current torch and numpy although ptan 0.8.1 pins torch==2.5.0, numpy<2
(ptan is installed with --no-deps), and ptan's modules that the reference loop uses still import."""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import numpy
import torch


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("+")[0].split(".")[:2])


def test_torch_is_current():
    assert torch.__version__.split("+")[0] != "2.5.0"
    assert _release(torch.__version__) >= (2, 6)


def test_numpy_is_2():
    assert _release(numpy.__version__)[0] >= 2


def test_ptan_0_8_1_imports():
    import ptan
    import ptan.agent
    import ptan.common.wrappers
    import ptan.experience

    version = getattr(ptan, "__version__", None) or metadata.version("ptan")
    assert version == "0.8.1"
    assert hasattr(ptan.agent, "DQNAgent") and hasattr(ptan.experience, "ExperienceSourceFirstLast")
    assert hasattr(ptan.common.wrappers, "wrap_dqn")


def test_python_m_fastdqn_help():
    proc = subprocess.run([sys.executable, "-m", "fastdqn", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout


def test_python_m_fastdqn_train_help():
    proc = subprocess.run([sys.executable, "-m", "fastdqn", "train", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for preset in ("baseline", "slow_grads", "ptan_reference"):
        assert preset in proc.stdout
