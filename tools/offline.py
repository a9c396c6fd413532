"""The offline install (README, "Offline install"): whether pip reaches a package registry, and
`python3 dev.py wheelhouse DIR`, which writes every wheel fastdqn needs beyond a preinstalled torch
for a target Python and platform, so that a machine without a registry installs from DIR alone.

Standard library and pip only (it runs before any venv exists). The closure is walked here, one
`pip download --no-deps` per round of new names, instead of by pip's resolver: pip would fetch
torch (gigabytes) to read its metadata, and ptan's pins (torch==2.5.0, numpy<2) must never be
followed. Names given as present on the target (--have), and torch, are not downloaded.
"""
from __future__ import annotations

import argparse
import email.parser
import json
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a bare base Python: pip's own copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PTAN = "ptan==0.8.1"  # its declared dependencies are pins the project overrides: never followed
PRESENT = {"torch"}   # what the wheelhouse is beyond
SECTION = 'README.md, section "Offline install"'


# --- is there a registry? -------------------------------------------------------------------------
def pip_locations(python: str = sys.executable) -> list[str]:
    """Index URLs and find-links pip is configured with (config files and PIP_* variables)."""
    out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        values[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    for key in ("index-url", "extra-index-url", "find-links"):
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env is not None:
            values[key] = env
    if values.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        values.pop("index-url", None), values.pop("extra-index-url", None)
    else:
        values.setdefault("index-url", "https://pypi.org/simple")
    return [u for key in ("index-url", "extra-index-url", "find-links") for u in values.get(key, "").split() if u]


def reachable(location: str, timeout: float = 5.0) -> bool:
    """A local folder that exists, or a server that answers at all (any HTTP status, even a
    certificate pip may accept and urllib not); False when nothing answers."""
    if "://" not in location or location.startswith("file:"):
        return Path(re.sub(r"^file://", "", location)).exists()
    try:
        urllib.request.urlopen(location, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except urllib.error.URLError as e:
        return isinstance(e.reason, ssl.SSLError)
    except (socket.timeout, OSError):
        return False
    return True


def registry_missing() -> str | None:
    """One line saying that pip reaches no registry (with what was tried), None if it does."""
    locations = pip_locations()
    if any(reachable(u) for u in sorted(locations, key=lambda u: u.startswith(("http:", "https:")))):  # local first
        return None
    tried = ", ".join(locations) or "no index configured"
    return f"no package registry reachable ({tried}): to install offline, see {SECTION}"


# --- the wheelhouse -------------------------------------------------------------------------------
def project_requirements(extras: list[str]) -> list[str]:
    """pyproject.toml's dependencies plus those of `extras`."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
        project = tomllib.loads(text)["project"]
        deps, optional = project["dependencies"], project.get("optional-dependencies", {})
    except ImportError:  # Python 3.10: the two arrays read by pattern
        def array(body: str) -> list[str]:
            return re.findall(r'"([^"]+)"', re.sub(r"#[^\n]*", "", body))
        deps = array(re.search(r"(?ms)^dependencies\s*=\s*\[(.*?)\]", text).group(1))
        section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
        optional = {m.group(1): array(m.group(2)) for m in re.finditer(r"(?ms)^(\w[\w-]*)\s*=\s*\[(.*?)\]", section)}
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"dev.py: error: unknown extra {unknown[0]!r}: expected one of {', '.join(optional)}")
    return deps + [r for e in extras for r in optional[e]]


def marker_environment(python_version: str | None, platform: str | None) -> dict:
    env = default_environment()
    if python_version:
        env.update(python_version=python_version, python_full_version=python_version + ".0",
                   implementation_version=python_version + ".0")
    if platform:
        machine = next((m for m in ("x86_64", "aarch64", "arm64", "amd64", "win32", "i686") if platform.endswith(m)),
                       env["platform_machine"])
        system = ("Linux", "linux") if "linux" in platform else ("Darwin", "darwin") if "macosx" in platform \
            else ("Windows", "win32") if platform.startswith("win") else (env["platform_system"], env["sys_platform"])
        env.update(platform_machine=machine, platform_system=system[0], sys_platform=system[1])
    return env


def wheel_name_version(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return canonicalize_name(name), version


def wheel_requirements(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        msg = email.parser.Parser().parsestr(whl.read(meta).decode("utf-8", "replace"), headersonly=True)
    return msg.get_all("Requires-Dist") or []


def applies(req: Requirement, env: dict, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in extras | {""})


def platform_tags(platform: str | None) -> list[str]:
    """A manylinux_2_N tag and every older glibc's (pip matches --platform tags exactly)."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform or "")
    if not m:
        return [platform] if platform else []
    glibc, arch = int(m.group(1)), m.group(2)
    legacy = [f"manylinux2014_{arch}"] + ([f"manylinux2010_{arch}", f"manylinux1_{arch}"] if arch in ("x86_64", "i686") else [])
    return [f"manylinux_2_{n}_{arch}" for n in range(glibc, 16, -1)] + legacy


def download(specs: list[str], dest: Path, python_version: str | None, platform: str | None) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
           "--only-binary=:all:", "-d", str(dest)]
    if python_version:
        cmd += ["--python-version", python_version, "--implementation", "cp"]
    for tag in platform_tags(platform):
        cmd += ["--platform", tag]
    print("+", shlex.join(cmd[1:] + specs), flush=True)
    if subprocess.run(cmd + specs).returncode != 0:
        raise SystemExit("dev.py: error: pip could not download the wheels above (see its message)")


def build(dest: Path, python_version: str | None, platform: str | None, extras: list[str],
          have: set[str]) -> dict[str, Path]:
    """Download the closure into dest; {name: wheel} of what it holds afterwards."""
    env = marker_environment(python_version, platform)
    target = {"python_version": python_version or env["python_version"], "platform": platform or "this machine's",
              "extras": extras, "have": sorted(have)}
    dest.mkdir(parents=True, exist_ok=True)
    stamp = dest / "wheelhouse.json"
    if not stamp.exists() or json.loads(stamp.read_text()).get("target") != target:
        for old in dest.glob("*.whl"):  # made for another target: start afresh
            old.unlink()
    got = {wheel_name_version(p)[0]: p for p in dest.glob("*.whl")}
    specs: dict[str, Requirement] = {}  # name -> every requirement on it so far, combined
    extras_of: dict[str, set[str]] = {}
    # requirements whose markers hold for the target (checked as they are queued)
    todo = [r for r in map(Requirement, project_requirements(extras) + [PTAN]) if applies(r, env, set())]
    while todo:
        new: set[str] = set()  # names whose requirements are still to walk
        for req in todo:
            name = canonicalize_name(req.name)
            if name in have:
                continue
            old = specs.get(name)
            specs[name] = Requirement(f"{name}{req.specifier & old.specifier if old else req.specifier}")
            grown = not extras_of.get(name, set()) >= req.extras
            extras_of.setdefault(name, set()).update(req.extras)
            wheel = got.get(name)
            if wheel is not None and not specs[name].specifier.contains(wheel_name_version(wheel)[1],
                                                                        prereleases=True):
                wheel.unlink()  # an earlier round's choice that a later requirement rules out
                del got[name]
                new.add(name)
            elif old is None or grown:
                new.add(name)
        missing = sorted(n for n in new if n not in got)
        if missing:
            download([str(specs[n]) for n in missing], dest, python_version, platform)
        got = {wheel_name_version(p)[0]: p for p in dest.glob("*.whl")}
        lost = [n for n in missing if n not in got]
        if lost:
            raise SystemExit(f"dev.py: error: pip downloaded no wheel for {', '.join(lost)}")
        todo = [Requirement(r) for n in sorted(new) if n != "ptan" for r in wheel_requirements(got[n])
                if applies(Requirement(r), env, extras_of[n])]
    for name in sorted(set(got) - set(specs)):  # left from an earlier run, no longer needed
        got.pop(name).unlink()
    stamp.write_text(json.dumps({"target": target, "wheels": sorted(p.name for p in got.values())}, indent=1) + "\n")
    return got


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python3 dev.py wheelhouse",
                                description="Write every wheel fastdqn needs beyond a preinstalled torch into DIR, "
                                            "for a machine without a package registry (README: Offline install).")
    p.add_argument("dir", metavar="DIR", help="the wheelhouse folder (e.g. .whl, ignored by git)")
    p.add_argument("--python-version", default=None, metavar="X.Y", help="target Python (default: this one)")
    p.add_argument("--platform", default=None, metavar="TAG",
                   help="target platform tag, e.g. manylinux_2_28_x86_64 (older manylinux tags match too; "
                        "default: this machine's)")
    p.add_argument("--extras", default="", metavar="A,B", help="fastdqn extras to include too (ref, test, ray)")
    p.add_argument("--have", default="", metavar="NAME,...",
                   help="distributions the target already has, left out (torch always is)")
    args = p.parse_args(argv)
    if args.python_version and not re.fullmatch(r"3\.\d+", args.python_version):
        p.error(f"--python-version {args.python_version!r}: expected 3.N")
    if args.platform and not args.python_version:
        p.error("--platform needs --python-version too (a wheel's tags name both)")
    missing = registry_missing()
    if missing:
        print(f"dev.py: {missing}", file=sys.stderr)
        return 1
    have = PRESENT | {canonicalize_name(n) for n in args.have.split(",") if n.strip()}
    dest = Path(args.dir)
    got = build(dest, args.python_version, args.platform, [e for e in args.extras.split(",") if e], have)
    size = sum(w.stat().st_size for w in got.values()) / 2**20
    print(f"{dest}: {len(got)} wheels, {size:.1f} MiB: {', '.join(sorted(got))}")
    print(f"on the target, in the checkout: python3 -m pip install -q --no-index --no-deps --no-compile "
          f"--target .site {dest}/*.whl && export PYTHONPATH=$PWD:$PWD/.site")
    return 0
