"""Run results: schema, atomic writes, validated reads, machine and version info."""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from .errors import UsageError

SCHEMA_VERSION = 1
STATUSES = ("solved", "budget", "interrupted", "failed", "completed")

# key -> type(s) every result file must carry (validated on read)
REQUIRED = {
    "schema_version": int, "status": str, "stop_reason": str, "config": dict, "git": dict,
    "versions": dict, "hardware": dict, "steps": int, "episodes": int, "updates": int,
    "frames_per_step": int, "fps": (float, type(None)), "fps_total": (float, type(None)),
    "frames_per_second": (float, type(None)), "fps_series": list, "wall_seconds": float,
    "solved": dict, "reward_curve": list,
}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    import torch
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "numpy": _version("numpy"), "gymnasium": _version("gymnasium"),
        "ale_py": _version("ale-py"), "pytorch_ignite": _version("pytorch-ignite"),
        "ptan": _version("ptan"), "fastdqn": _version("fastdqn"),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The x86 matrix extensions that decide a CPU's speed here, widest first. VMs report one model name
# ("AMD EPYC") for hosts with and without them, and bf16 matmuls run ~1000x slower without native
# bf16 (results/amd-epyc-2c/README.md).
ISA_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo; empty where it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_isa(flags: set[str] | None = None) -> str:
    """The widest of ISA_FLAGS the CPU has, as a tag (avx512bf16), or '' with none of them."""
    flags = cpu_flags() if flags is None else flags
    return next((f.replace("_", "") for f in ISA_FLAGS if f in flags), "")


def native_cpu_bf16(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def hardware() -> dict:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cpu_isa": cpu_isa(), "cores": os.cpu_count(), "gpu": gpu,
            "platform": platform.platform()}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("(r)", "").replace("(tm)", "")).strip("-")


def cuda_math() -> dict:
    """The process's CUDA math settings (loops.common.run_engine decides them for training runs)."""
    import torch
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_deterministic": torch.backends.cudnn.deterministic}


def machine_id(hw: dict | None = None) -> str:
    """The results folder's key: a directory-safe name derived from the hardware (CPU model, its
    widest matrix ISA, cores, GPU), so numbers of different hardware never mix. Machines of one
    kind share it: the check gate's committed baselines are found by it on every CI machine of
    that kind. Results recorded before the ISA was (no `cpu_isa`) keep the id they were filed under."""
    hw = hw or hardware()
    parts = [hw["cpu"]] + ([hw["cpu_isa"]] if hw.get("cpu_isa") else []) + [f"{hw['cores']}c"] \
        + ([hw["gpu"]] if hw.get("gpu") else [])
    return _slug(" ".join(parts))


MACHINE_ENV = "FASTDQN_MACHINE"  # overrides this machine's name (bench --machine sets it for its runs)
MACHINE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


def machine_file() -> Path:
    """Where this machine's name is kept (as asv's machine file): outside any checkout, so every
    clone on the machine shares it and a clone on another machine never sees it."""
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "fastdqn" / "machine.json"


def check_machine_name(name: str, where: str) -> str:
    if not MACHINE_NAME_RE.fullmatch(name):
        raise UsageError(f"{where}: machine name {name!r}: expected lowercase letters, digits, '.', '_' "
                         "or '-', starting with a letter or digit")
    return name


def machine_name() -> str:
    """This machine's identity, recorded in every result: bench reuses only results of the same
    name. $FASTDQN_MACHINE wins; else the name in machine_file(), made on first use from the
    hostname, the hardware id and a random suffix (hosts of one image share hostname and
    hardware, so those alone would name them all alike)."""
    override = os.environ.get(MACHINE_ENV)
    if override:
        return check_machine_name(override, f"${MACHINE_ENV}")
    path = machine_file()
    try:
        doc = json.loads(path.read_text())
        return check_machine_name(doc["name"], f"machine file {path}")
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"machine file {path}: unreadable ({type(e).__name__}: {e}); fix it or delete it "
                         "to name this machine anew") from None
    hw = hardware()
    base = "-".join(p for p in (_slug(platform.node())[:40], machine_id(hw)) if p)
    name = f"{base}-{secrets.token_hex(3)}"
    try:
        write_json_atomic(path, {"name": name, "hostname": platform.node(), "machine_id": machine_id(hw),
                                 "hardware": hw, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    except OSError:
        return base  # nowhere to keep a random name: the hostname and hardware alone, stable
    return name


def git_info() -> dict:
    root = Path(__file__).resolve().parent.parent

    def git(*args):
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            return None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path`, renamed over it (with a plain open()'s mode) when the block
    ends without error: a reader never sees half a file, a stop mid-write leaves none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, allow_nan=False)
        fh.flush()
        os.fsync(fh.fileno())


def benchmark_doc(benchmark: str) -> dict:
    """The head of a benchmark script's JSON: what ran, where, on which code and when."""
    hw = hardware()
    return {"benchmark": benchmark, "machine_id": machine_id(hw), "machine": machine_name(), "hardware": hw,
            "versions": versions(), "git": git_info(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}


def write_benchmark(doc: dict, markdown: str, out_dir: str | os.PathLike = "", name: str = "") -> Path:
    """`<name>.json` and `<name>.md` into out_dir (default: results/<machine_id>/); returns the JSON's path."""
    out = Path(out_dir) if out_dir else Path(__file__).resolve().parent.parent / "results" / doc["machine_id"]
    name = name or doc["benchmark"]
    write_json_atomic(out / f"{name}.json", doc)
    (out / f"{name}.md").write_text(markdown)
    print(f"written: {out / (name + '.json')}, {out / (name + '.md')}", file=sys.stderr)
    return out / f"{name}.json"


def _finite(x):
    return None if x is None or not math.isfinite(x) else float(x)


def phase_clock(device: str | None) -> str:
    """What the phase seconds measure: host time always; on CUDA kernels run asynchronously, so GPU
    work is charged to the phase whose host call waits for it, not the phase that queued it."""
    if device and device.startswith("cuda"):
        return "host (CUDA: GPU work is charged to the phase that waits for it)"
    return "host"


def run_compute(cfg, telemetry, device: str, hw: dict) -> dict | None:
    """The run's counted FLOPs, achieved GFLOP/s and share of this machine's peak (compute.py)."""
    import torch  # not at the top: report and validation read results without torch

    from .compute import compute_report, load_peaks
    threads = cfg.run.threads or torch.get_num_threads()
    return compute_report(telemetry.flops, telemetry, device, threads, cfg.flags.bf16, load_peaks(machine_id(hw)))


def build_result(cfg, telemetry, status: str, frames_per_step: int, extra: dict | None = None) -> dict:
    rewards = telemetry.rewards
    bound = rewards.bound
    solved = {}
    for key, hit, rule in (("mean100", rewards.solved_mean100, f"mean of the last 100 episodes >= {bound}"),
                           ("ema", rewards.solved_ema, f"EMA(0.98) of episode reward >= {bound}")):
        reason = None if hit else (f"not reached in {len(telemetry.curve)} episodes, "
                                   f"{telemetry.steps} agent steps ({telemetry.stop_reason})")
        solved[key] = {"rule": rule, **(hit or {"seconds": None, "steps": None, "episodes": None}),
                       "reason": reason}
    fps = _finite(telemetry.fps())
    hw = hardware()
    result = {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "stop_reason": telemetry.stop_reason,
        "config": cfg.to_dict(),
        "git": git_info(),
        "versions": versions(),
        "hardware": hw,
        "machine": machine_name(),
        "steps": int(telemetry.steps),
        "episodes": len(telemetry.curve),
        "updates": int(telemetry.updates),
        "replay_ratio": telemetry.replay_ratio(),
        "samples_per_update": telemetry.samples_per_update,
        "frames_per_step": frames_per_step,
        "fps": fps,
        "fps_total": _finite(telemetry.fps_total()),
        "frames_per_second": fps * frames_per_step if fps is not None else None,
        "fps_definition": "agent steps per wall-clock second after the replay warm-up",
        "learning_started": ({"steps": telemetry.learn_start[0], "seconds": round(telemetry.learn_start[1], 3)}
                             if telemetry.learn_start else None),
        "fps_series": telemetry.fps_series,
        "phase_profile": {"trainer": telemetry.profile.report(telemetry.now()),
                          "players": telemetry.player_profiles, "clock": phase_clock((extra or {}).get("device"))},
        "compute": run_compute(cfg, telemetry, (extra or {}).get("device") or cfg.run.device, hw),
        "cuda_math": cuda_math(),
        "wall_seconds": float(telemetry.now()),
        "solved": solved,
        "stop_rule": {"reward": bound, "source": rewards.source},
        "last_mean100": rewards.mean100,
        "last_ema": rewards.ema,
        "reward_curve": telemetry.curve,
        "reward_curve_columns": ["episode", "step", "wall_seconds", "reward"],
    }
    result.update(extra or {})
    return result


def _is(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:  # JSON writes 3.0 as 3.0, but accept 3
        return True
    return isinstance(value, kinds)


def validate_result(obj, name: str) -> dict:
    """Check a result read back from disk; UsageError naming the file and the bad key."""
    if not isinstance(obj, dict):
        raise UsageError(f"result {name}: expected a JSON object")
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"result {name}: schema_version {obj.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    for key, kind in REQUIRED.items():
        if key not in obj:
            raise UsageError(f"result {name}: missing key {key!r}")
        if not _is(obj[key], kind):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            raise UsageError(f"result {name}: key {key!r} has {type(obj[key]).__name__}, expected "
                             f"{' or '.join(k.__name__ for k in kinds)}")
    if obj["status"] not in STATUSES:
        raise UsageError(f"result {name}: status {obj['status']!r}, expected one of {', '.join(STATUSES)}")
    for key in ("mean100", "ema"):
        if key not in obj["solved"]:
            raise UsageError(f"result {name}: missing solved.{key}")
    return obj


def load_result(path: str | os.PathLike) -> dict:
    """Parse as JSON data (never unpickle or execute) and validate."""
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise UsageError(f"result {path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"result {path}: not valid JSON ({e})") from None
    return validate_result(obj, str(path))
