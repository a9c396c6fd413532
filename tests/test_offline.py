"""The offline install (README, "Offline install"): dev.py says in one line that no registry is
reachable, and `dev.py wheelhouse` writes wheels that install with --no-index and run fastdqn on a
Python that has only torch and the packages named present (--have)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# what the target is said to have besides torch (pandas, cloudpickle and packaging too where present)
HAVE = ["numpy", "opencv-python-headless", "tensorboard", "matplotlib", "tqdm", "pytest"]


def no_registry_env() -> dict:
    """pip without its config files, pointed at a closed local port: no registry answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}


def test_dev_py_without_a_registry_says_so_in_one_line(tmp_path):
    for name in ("dev.py", "pyproject.toml", "tools/offline.py"):  # a checkout that was never set up
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    for args in (["test"], ["wheelhouse", "wh"]):
        proc = subprocess.run([sys.executable, "dev.py", *args], cwd=tmp_path, env=no_registry_env(),
                              capture_output=True, text=True, timeout=60)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(err) == 1, proc.stderr
        assert err[0].startswith("dev.py: no package registry reachable (http://127.0.0.1:9/simple)")
        assert 'README.md, section "Offline install"' in err[0]
    assert not (tmp_path / ".venv").exists() and not (tmp_path / "wh").exists()
    assert "## Offline install" in (ROOT / "README.md").read_text()


def closure(names: list[str]) -> list[metadata.Distribution]:
    """The installed distributions `names` need, themselves included."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = seen[name] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # optional on this platform
        for r in map(Requirement, dist.requires or []):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return list(seen.values())


def host_site(names: list[str], dest: Path) -> None:
    """A site folder that holds only `names` and what they need, linked from this environment:
    the target's preinstalled packages."""
    dest.mkdir()
    for dist in closure(names):
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            src = Path(dist.locate_file(top))
            if src.exists() and not (dest / top).exists():
                (dest / top).symlink_to(src)


@pytest.mark.slow  # about 15 s: downloads (pip's cache), an install, a short Pong run through ptan
def test_wheelhouse_installs_and_runs_without_a_registry(tmp_path):
    have = [n for n in HAVE + ["pandas", "cloudpickle", "packaging"] if closure([n])]
    wheels = tmp_path / "whl"
    build = subprocess.run([sys.executable, str(ROOT / "dev.py"), "wheelhouse", str(wheels), "--extras", "ref",
                            "--have", ",".join(have)], capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stderr
    names = {canonicalize_name(p.name.split("-")[0]) for p in wheels.glob("*.whl")}
    assert {"gymnasium", "farama-notifications", "ale-py", "pytorch-ignite", "ptan", "stable-baselines3"} <= names
    assert not names & {"torch", *map(canonicalize_name, have)}

    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                              "--target", str(site), *map(str, sorted(wheels.glob("*.whl")))],
                             env=no_registry_env(), capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr
    host_site(["torch", *have], tmp_path / "host")

    # -S: none of this environment's site-packages, only the host's packages, the wheels and the checkout
    script = f"""
import site, sys
site.addsitedir({str(tmp_path / 'host')!r}); site.addsitedir({str(site)!r}); sys.path.insert(0, {str(ROOT)!r})
import ale_py, gymnasium, ignite, ptan, stable_baselines3
assert all(m.__file__.startswith({str(site)!r}) for m in (ale_py, gymnasium, ignite, ptan, stable_baselines3))
from fastdqn.cli import main
sys.exit(main(["train", "--preset", "ptan_reference", "--max-steps", "40", "--replay-initial", "20",
               "--batch-size", "4", "--device", "cpu", "--progress", "false", "--threads", "1",
               "--out", {str(tmp_path / 'r.json')!r}]))
"""
    run = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, env=no_registry_env(),
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "40 steps" in run.stdout
