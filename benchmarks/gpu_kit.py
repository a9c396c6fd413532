"""The GPU kit: every GPU number in two prepared commands, each within one short device window.

    python3 benchmarks/gpu_kit.py part1 OUT [--dry-run]   # at most PART_SECONDS[1] (under 5 minutes)
    python3 benchmarks/gpu_kit.py part2 OUT [--dry-run]   # at most PART_SECONDS[2] (under 6.5 minutes)

OUT is a results root: everything lands under OUT/<machine-id>/ in the layout of results/ (OUT =
results writes straight into the checkout, ready to commit).

part1: preflight (GPU, cores, every import, a C compiler for torch.compile: compile cells are
       skipped, with a line saying why, where it fails); the CUDA tests by node id; env-only
       ceilings (ale-py's vector env at 16/32/64 envs on all cores, sync and async; torch_pong
       from 16 to 65,536 games, and its compiled step at 1,024/16,384/65,536); learner updates/s
       per flag at batch 32/128/512.
part2: a short FPS ladder of every preset; the fast path; a time-to-17 attempt with the fastest
       recipe known (RECIPE), scaled to the cores and capped to the time left; `fastdqn report`.

Each step runs in its own process group with a time cap taken from what is left of the part
(later steps keep their minimum), so a hang costs one step, not the window; a bench step that
runs out of time is stopped with SIGINT and keeps its finished cells. Every step prints one line
and is recorded in OUT/<machine-id>/gpu_kit.{json,md} with its log under gpu_kit_logs/.

--dry-run runs every step on the CPU with tiny budgets (CI runs it: tests/test_gpu_kit.py), so
the kit is known to work end to end except for CUDA itself.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

PART_SECONDS = {1: 285.0, 2: 380.0}
IMPORTS = ("torch", "numpy", "gymnasium", "ale_py", "cv2", "ignite", "ptan", "stable_baselines3", "tensorboard",
           "matplotlib", "tqdm", "pytest", "pytest_benchmark", "fastdqn")
# The tests that skip without CUDA, by node id (tests/test_gpu_kit.py checks that each exists).
CUDA_TESTS = (
    "tests/test_learner.py::test_flag_matches_eager_cuda",
    "tests/test_learner.py::test_cuda_graph_replays_and_rejects_other_shapes",
    "tests/test_learner.py::test_check_flags_accepts_cuda_combinations",
    "tests/test_torch_pong.py::test_cpu_and_cuda_give_identical_games_without_host_sync",
    "tests/test_transfer.py::test_pinned_copies_equal_plain_ones_with_reuse",
    "tests/test_device_pipeline.py::test_device_loop_on_cuda_with_fast_learner",
    "tests/test_syncs.py",
)
COMPILE_TESTS = ("tests/test_learner.py::test_compile_matches_eager_cuda",
                 "tests/test_torch_pong.py::test_compiled_cuda_step_matches_the_eager_cpu_step")
TORCH_PONG_ENVS = "16,64,256,1024,4096,16384,65536"
TORCH_PONG_COMPILED_ENVS = "1024,16384,65536"
LEARNER_SETTINGS = ("eager", "foreach", "fused", "bf16", "cuda_graph", "cuda_graph+bf16")
COMPILE_SETTINGS = ("compile", "compile+bf16")


def recipe(cores: int) -> dict:
    """The fastest time-to-17 recipe known (`solve_recipe`), scaled to the host: ale-py's async
    vector env with two envs per core, half of them returned per receive, the replay on the device.
    Not compiled: compiling costs a minute of a window of minutes."""
    return {"preset": "solve_recipe", "envs": 2 * cores, "async_batch": cores, "replay": "device",
            "compile": False}


def ladder_cells() -> list[dict]:
    from fastdqn.config import PRESETS
    # a ladder cell runs ~12 s, less than compiling takes: compiled presets run eager here, renamed.
    # Pong's presets only: another env's (carracing) has its own matrix and may need an extra
    pong = [p for p, hp in PRESETS.items() if "env" not in hp]
    return [{"name": p, "preset": p} if not PRESETS[p].get("compile") else
            {"name": f"{p}_eager", "preset": p, "compile": False} for p in pong]


def fast_path_cells(cores: int) -> list[dict]:
    ale = {"preset": "ale_vector", "envs": 2 * cores, "async_batch": cores, "updates_per_step": 0.25,
           "replay": "device", "pinned": True, "adam": "fused"}
    return [{"name": "ale_async_device_replay", **ale},
            {"name": "ale_async_device_replay_graph", **ale, "cuda_graph": True},
            {"name": "torch_pong_device_4096", "preset": "baseline", "env": "torch_pong", "loop": "device",
             "envs": 4096, "updates_per_step": 1 / 64, "batch_size": 512, "replay_size": 1_000_000,
             "replay_initial": 50_000, "target_sync_steps": 20_000, "epsilon_steps": 500_000, "adam": "fused",
             "cuda_graph": True}]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)  # strings, ints and floats are the same in TOML


def write_matrix(path: Path, name: str, description: str, defaults: dict, cells: list[dict]) -> Path:
    lines = [f"name = {toml_value(name)}", f"description = {toml_value(description)}", "seeds = [123]", "",
             "[defaults]"] + [f"{k} = {toml_value(v)}" for k, v in defaults.items()]
    for cell in cells:
        lines += ["", "[[cell]]"] + [f"{k} = {toml_value(v)}" for k, v in cell.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


class Kit:
    def __init__(self, out: Path, part: int, dry: bool):
        from fastdqn.results import machine_id
        self.out, self.part, self.dry = out, part, dry
        self.start = time.monotonic()
        self.deadline = self.start + PART_SECONDS[part]
        self.dir = out / machine_id()
        self.logs = self.dir / "gpu_kit_logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.device = "cpu" if dry else "cuda"
        self.cores = os.cpu_count() or 1
        self.steps: list[dict] = []
        path = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def record(self, name: str, status: str, seconds: float, note: str = "", cmd: list[str] | None = None) -> None:
        self.steps.append({"step": name, "status": status, "seconds": round(seconds, 1), "note": note,
                           "command": cmd})
        print(f"[kit part {self.part} {time.monotonic() - self.start:5.0f} s] {name}: {status} "
              f"({seconds:.0f} s){': ' + note if note else ''}", flush=True)

    def run(self, name: str, cmd: list[str], cap: float, reserve: float = 0.0, interrupt: bool = False) -> str:
        """Run one step's command with a cap of min(cap, time left - reserve); its output to its log."""
        timeout = min(cap, self.left() - reserve)
        if timeout < 5:
            self.record(name, "skipped", 0.0, f"no time left in part {self.part}", cmd)
            return "skipped"
        start = time.monotonic()
        with open(self.logs / f"{name}.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
                status, note = ("ok", "") if rc == 0 else ("failed", f"exit {rc}, see gpu_kit_logs/{name}.log")
            except subprocess.TimeoutExpired:
                # SIGINT first: bench keeps its finished cells and writes the running one as interrupted
                os.killpg(proc.pid, signal.SIGINT if interrupt else signal.SIGKILL)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                status, note = "timeout", f"stopped after {timeout:.0f} s (its cap), see gpu_kit_logs/{name}.log"
        self.record(name, status, time.monotonic() - start, note, cmd)
        return status

    def bench(self, name: str, matrix: Path, cap: float, reserve: float = 0.0) -> str:
        return self.run(name, [sys.executable, "-m", "fastdqn", "bench", str(matrix), "--results", str(self.out),
                               "--no-progress"], cap, reserve, interrupt=True)

    def write_summary(self) -> None:
        path = self.dir / "gpu_kit.json"
        doc = json.loads(path.read_text()) if path.exists() else {}
        from fastdqn.results import git_info, hardware, versions, write_json_atomic
        doc.update({"hardware": hardware(), "versions": versions()})
        doc[f"part{self.part}"] = {"dry_run": self.dry, "git": git_info(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                   "seconds": round(time.monotonic() - self.start, 1),
                                   "budget_seconds": PART_SECONDS[self.part], "steps": self.steps}
        write_json_atomic(path, doc)
        hw = doc["hardware"]
        lines = ["# GPU kit", "", f"Machine `{self.dir.name}`: {hw['cpu']}, {hw['cores']} cores, GPU {hw['gpu'] or 'none'}; "
                 f"torch {doc['versions']['torch']}, CUDA {doc['versions']['cuda']}.", ""]
        for part in ("part1", "part2"):
            if part in doc:
                p = doc[part]
                lines += [f"## {part}{' (dry run, CPU)' if p['dry_run'] else ''}: {p['seconds']:.0f} s of "
                          f"{p['budget_seconds']:.0f}, {p['finished']}, commit {(p['git']['commit'] or '?')[:10]}", "",
                          "| step | status | seconds | note |", "|---|---|---:|---|"]
                lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.0f} | {s['note']} |" for s in p["steps"]]
                lines.append("")
        (self.dir / "gpu_kit.md").write_text("\n".join(lines))


# --- part 1 ------------------------------------------------------------------------------------------
def preflight(kit: Kit) -> bool:
    """Write gpu_kit_preflight.{json,md}; True when torch.compile works on the device."""
    import importlib
    start = time.monotonic()
    imports = {}
    for name in IMPORTS:
        try:
            mod = importlib.import_module(name)
            imports[name] = getattr(mod, "__version__", "ok")
        except Exception as e:  # any failure to import is what the preflight reports
            imports[name] = f"FAILED: {type(e).__name__}: {e}"
    import torch
    gpu = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        gpu = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
               "bf16": torch.cuda.is_bf16_supported(), "cudnn": torch.backends.cudnn.version()}
    compilers = {c: shutil.which(c) for c in ("cc", "gcc", "g++", "clang")}
    # the dry run traces only (backend eager): inductor's C++ build on a CPU takes longer than the rest
    backend = ", backend='eager'" if kit.dry else ""
    probe = (f"import torch; f = torch.compile(lambda x: torch.sin(x) * 2 + 1{backend}); "
             f"x = torch.ones(64, device={kit.device!r}); assert torch.allclose(f(x), torch.sin(x) * 2 + 1); print('ok')")
    try:
        proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=kit.env, capture_output=True, text=True,
                              timeout=min(150, kit.left() - 120))
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        compile_ok, why = proc.returncode == 0, "" if proc.returncode == 0 else tail
    except subprocess.TimeoutExpired:
        compile_ok, why = False, "torch.compile of a one-line function did not finish in time"
    doc = {"python": platform.python_version(), "cores": kit.cores, "device": kit.device, "gpu": gpu,
           "torch": torch.__version__, "cuda": torch.version.cuda, "imports": imports, "compilers": compilers,
           "compile_ok": compile_ok, "compile_error": why or None}
    from fastdqn.results import write_json_atomic
    write_json_atomic(kit.dir / "gpu_kit_preflight.json", doc)
    lines = ["# GPU kit preflight", "", f"Python {doc['python']}, {kit.cores} cores, device {kit.device}, "
             f"GPU: {json.dumps(gpu) if gpu else 'none'}; torch {doc['torch']}, CUDA {doc['cuda']}.", "",
             "| import | version |", "|---|---|"] + [f"| {k} | {v} |" for k, v in imports.items()]
    lines += ["", f"C compilers: {', '.join(f'{k}={v}' for k, v in compilers.items() if v) or 'none'}.",
              f"torch.compile on {kit.device}: {'works' if compile_ok else 'FAILED: ' + why}."]
    (kit.dir / "gpu_kit_preflight.md").write_text("\n".join(lines) + "\n")
    broken = [k for k, v in imports.items() if str(v).startswith("FAILED")]
    note = (f"imports failed: {', '.join(broken)}; " if broken else "") + (
        "torch.compile works" if compile_ok else f"compile cells skipped: torch.compile fails ({why})")
    kit.record("preflight", "failed" if broken else "ok", time.monotonic() - start, note)
    return compile_ok


def part1(kit: Kit) -> None:
    """Most wanted first: the CUDA tests, the env ceilings, the learner; the compile-heavy steps
    (minutes of compiling) take what is left."""
    compile_ok = preflight(kit)
    d = kit.dir
    pytest = [sys.executable, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider"]
    kit.run("cuda_tests", [*pytest, *CUDA_TESTS, f"--junitxml={d / 'gpu_kit_cuda_tests.xml'}"], cap=100, reserve=90)
    if kit.dry:
        pong = ["--device", "cpu", "--envs", "16,64", "--seconds", "0.05", "--repeats", "1", "--warmup", "2",
                "--size", "36", "--threads", "1", "--name", "torch_pong_speed_cpu"]
        ale = ["--envs", "2,4", "--seconds", "0.05", "--repeats", "1", "--warmup", "20", "--threads", "1"]
        learner = ["--device", "cpu", "--batch-sizes", "8", "--seconds-per-cell", "0.05", "--repeats", "1",
                   "--warmup", "1", "--threads", "1"]
        # the compile step runs eager cells: inductor's C++ build alone takes minutes on two cores
        settings, compiled = ("eager", "fused", "bf16"), ("eager",)
    else:
        pong = ["--device", "cuda", "--envs", TORCH_PONG_ENVS, "--seconds", "0.3", "--repeats", "3", "--warmup", "10",
                "--name", "torch_pong_speed_cuda"]
        ale = ["--envs", "16,32,64", "--seconds", "1", "--repeats", "3"]
        learner = ["--device", "cuda", "--batch-sizes", "32", "128", "512", "--seconds-per-cell", "1",
                   "--repeats", "3", "--warmup", "5"]
        settings, compiled = LEARNER_SETTINGS, COMPILE_SETTINGS
    kit.run("torch_pong_speed", [sys.executable, str(HERE / "torch_pong_speed.py"), *pong, "--out-dir", str(d)],
            cap=30, reserve=70)
    kit.run("ale_vector_speed", [sys.executable, str(HERE / "ale_vector_speed.py"), *ale, "--out-dir", str(d)],
            cap=45, reserve=40)

    def learner_speed(name: str, settings, cap: float, reserve: float) -> None:
        # its own budget inside the step's cap: it starts no cell after it and writes what it has
        timeout = min(cap, kit.left() - reserve)
        kit.run(name, [sys.executable, str(HERE / "learner_speed.py"), *learner, "--settings", *settings,
                       "--max-seconds", f"{max(1.0, timeout - 20):.0f}", "--name", name, "--out", str(d)],
                cap=timeout)
    learner_speed("learner_speed", settings, cap=70, reserve=0)
    if not compile_ok:
        kit.record("compile", "skipped", 0.0, "torch.compile fails here (gpu_kit_preflight.md)")
        return
    kit.run("cuda_compile_tests", [*pytest, *COMPILE_TESTS, f"--junitxml={d / 'gpu_kit_cuda_compile_tests.xml'}"],
            cap=90, reserve=20)
    if not kit.dry:  # compile_env's step against the eager ceilings above (a compile per N)
        kit.run("torch_pong_speed_compiled", [sys.executable, str(HERE / "torch_pong_speed.py"), "--device", "cuda",
                                              "--envs", TORCH_PONG_COMPILED_ENVS, "--seconds", "0.3", "--repeats", "3",
                                              "--warmup", "10", "--compiled", "--name", "torch_pong_speed_cuda_compiled",
                                              "--out-dir", str(d)], cap=70, reserve=20)
    learner_speed("learner_speed_compile", compiled, cap=kit.left(), reserve=0)


# --- part 2 ------------------------------------------------------------------------------------------
def part2(kit: Kit) -> None:
    from fastdqn.bench.matrix import load_matrix
    d, cores = kit.dir, kit.cores
    if kit.dry:  # every kind of step, few cells, tiny budgets; the real matrices are validated below
        tiny = {"device": "cpu", "threads": 1, "max_steps": 80, "replay_initial": 40, "batch_size": 4,
                "fps_every": 8, "replay_size": 1000}
        ladder = ([c for c in ladder_cells() if c["name"] == "baseline"], tiny)  # ale: in the recipe
        fast = ([{"name": "torch_pong_device", "preset": "baseline", "env": "torch_pong", "loop": "device", "envs": 8,
                  "pong_size": 36, "updates_per_step": 0.25}], tiny)
        solve_cells, solve_defaults = [{"name": "recipe", **recipe(2)}], tiny
    else:
        ladder = (ladder_cells(), {"device": "cuda", "replay_initial": 2000, "max_steps": 1_000_000,
                                   "max_seconds": 12, "fps_every": 500})
        fast = (fast_path_cells(cores), {"device": "cuda", "max_steps": 10_000_000, "max_seconds": 15})
        solve_cells, solve_defaults = [{"name": "recipe", **recipe(cores)}], {"device": "cuda"}
    if kit.dry:  # what the GPU run would use must at least load
        real = (("kit_ladder", ladder_cells()), ("kit_fast_path", fast_path_cells(cores)),
                ("kit_time_to_17", [{"name": "recipe", **recipe(cores)}]))
        for name, cells in real:
            load_matrix(write_matrix(kit.logs / f"{name}_real.toml", name, "validation only", {}, cells))
    matrices = {"kit_ladder": ("every preset: FPS over a short training phase", *ladder),
                "kit_fast_path": ("the fast path: ale-py async + device replay + learner flags; torch_pong device loop", *fast)}
    # a dry cell (imports, env, 80 CPU steps) outran 22-25 s on a 2-core AVX2 host: 60 s each there
    per_cell = (60, 60) if kit.dry else (22, 25)
    caps = {"kit_ladder": (len(ladder[0]) * per_cell[0], 150), "kit_fast_path": (len(fast[0]) * per_cell[1], 90)}
    for name, (description, cells, defaults) in matrices.items():
        path = write_matrix(kit.logs / f"{name}.toml", name, description, defaults, cells)
        kit.bench(name, path, *caps[name])
    # time to 17: what is left, less the report's time
    seconds = max(10, int(kit.left() - (40 if not kit.dry else 30)) - 20)
    budget = {} if kit.dry else {"max_seconds": seconds}
    path = write_matrix(kit.logs / "kit_time_to_17.toml", "kit_time_to_17",
                        "time to a 100-episode mean of 17 with the fastest recipe known, capped to the window",
                        {**solve_defaults, **budget}, solve_cells)
    kit.bench("time_to_17", path, cap=seconds + 30, reserve=30)
    kit.run("report", [sys.executable, "-m", "fastdqn", "report", str(kit.out)], cap=kit.left())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("part1", "part2"))
    parser.add_argument("out", metavar="OUT", help="results root to write into (results: the checkout's)")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny budgets")
    args = parser.parse_args()
    import torch
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_kit: error: no CUDA device here; --dry-run runs every step on the CPU", file=sys.stderr)
        return 2
    kit = Kit(Path(args.out).resolve(), int(args.part[-1]), args.dry_run)
    try:
        (part1 if kit.part == 1 else part2)(kit)
    finally:
        kit.write_summary()
    bad = [s["step"] for s in kit.steps if s["status"] != "ok"]
    print(f"gpu_kit {args.part}: {len(kit.steps) - len(bad)}/{len(kit.steps)} steps ok"
          + (f", not ok: {', '.join(bad)}" if bad else "") + f"; written under {kit.dir}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
