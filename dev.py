#!/usr/bin/env python3
"""Set-up and entry point for a fresh machine with only Python:

    python3 dev.py bench [ARGS]   # set up .venv, then `fastdqn bench ARGS` (the default benchmark)
    python3 dev.py test [ARGS]    # set up .venv, then `pytest ARGS`; no ARGS: the whole suite in
                                  # two phases (below)
    python3 dev.py fastdqn ARGS   # set up .venv, then any fastdqn command
    python3 dev.py wheelhouse DIR [--python-version X.Y] [--platform TAG] [--extras A,B] [--have NAME,...]
                                  # wheels for a machine without a registry (README: Offline install)

Set-up (skipped when pyproject.toml is unchanged since the last one):
- .venv is created beside this file. Where the base Python already has torch (the GPU host's
  image), the venv sees it (--system-site-packages) and keeps that build.
- Otherwise torch==2.13.0 is installed first: on the CPU machines that is the CPU build on disk,
  so the open torch requirement that follows never pulls a multi-GB CUDA build.
- fastdqn is installed editable with its test, reference, ray and evotorch extras, then ptan
  0.8.1 WITHOUT its dependencies: its pins (torch==2.5.0, numpy<2, ...) never reach the resolver.
- Where pip reaches no package registry, it says so in one line and points to the README's
  offline install instead of failing inside pip.

`dev.py test` with no ARGS runs the suite in two phases: every test not marked `quiet` on one
pytest-xdist worker per core (most tests are one-thread training runs: on the 2-core CI machine
two at once take 0.75x the wall clock), then the `quiet` ones, which time code against code,
alone. Tests marked `long` (learning tests of over 5 minutes there) are left out, for CI's
20-minute budget: `dev.py test -m long` runs them.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
TORCH_CPU = "torch==2.13.0"
PTAN = "ptan==0.8.1"


def sh(*cmd: str) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def base_has_torch() -> bool:
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def setup() -> None:
    stamp = VENV / ".fastdqn-setup"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + TORCH_CPU.encode() + PTAN.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == want and PY.exists():
        return
    from tools.offline import registry_missing
    missing = registry_missing()
    if missing:
        raise SystemExit(f"dev.py: {missing}")
    if not PY.exists():
        system_torch = base_has_torch()
        print(f"creating {VENV} ({'with the base torch' if system_torch else 'fresh'})", flush=True)
        venv.create(VENV, with_pip=True, system_site_packages=system_torch)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if subprocess.run([str(PY), "-c", "import torch"], capture_output=True).returncode != 0:
        sh(*pip, TORCH_CPU)
    sh(*pip, "-e", f"{ROOT}[test,ref,ray,evotorch]")  # every peer the tests run
    sh(*pip, "--no-deps", PTAN)
    stamp.write_text(want)


TEST_PHASES = (["-n", "logical", "--dist", "loadgroup", "-m", "not quiet and not long"], ["-m", "quiet and not long"])


def run_phases(phases) -> int:
    """Each command in turn as a child; after a SIGTERM or SIGINT no later phase starts. A
    SIGTERM sent to us reaches the running pytest as SIGINT, its own clean stop (xdist ends its
    workers); a terminal's Ctrl-C reaches it directly (it is in our process group), so it is not
    sent twice. The first failing exit code is ours; every phase runs otherwise, so that CI shows
    every failure."""
    stopped, child, code = [], None, 0

    def stop(signum, _frame):
        stopped.append(signum)
        if signum == signal.SIGTERM and child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for cmd in phases:
        if stopped:
            break
        print("+", " ".join(cmd), flush=True)
        child = subprocess.Popen(cmd)
        rc = child.wait()
        code = code or rc
    return code or (128 + stopped[0] if stopped else 0)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("bench", "test", "fastdqn", "setup", "wheelhouse"):
        print("usage: python3 dev.py bench|test|fastdqn|setup|wheelhouse [ARGS]", file=sys.stderr)
        return 2
    if argv[0] == "wheelhouse":  # needs no venv: it runs on the base Python
        from tools import offline
        return offline.main(argv[1:])
    setup()
    what, rest = argv[0], argv[1:]
    if what == "setup":
        return 0
    if what == "test" and not rest:
        os.chdir(ROOT)
        return run_phases([[str(PY), "-m", "pytest", *phase] for phase in TEST_PHASES])
    if what == "test":
        cmd = [str(PY), "-m", "pytest", *rest]
    elif what == "bench":
        cmd = [str(BIN / "fastdqn"), "bench", *rest]
    else:
        cmd = [str(BIN / "fastdqn"), *rest]
    os.chdir(ROOT)
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: a stop signal sent to this process reaches the command itself, and its
    # exit code is ours; a child would be orphaned and keep running when we are killed
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
