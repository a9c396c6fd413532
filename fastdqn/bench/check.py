"""`fastdqn check`: the speed regression gate.

Primary gates are speed RATIOS measured within one run (fast path vs its slow reference, rounds
interleaved, best round of each), so they hold on noisy shared machines where absolute times do
not. The committed reference (benchmarks/check_reference.json) has the ratios per machine id;
a gate regresses when its ratio falls below reference x (1 - tolerance). Machines without a
reference of their own are compared with the `default` entry.

Absolute gates: a short pytest-benchmark session of a few cells of benchmarks/test_env_speed.py,
compared with the committed pytest-benchmark JSON of the same machine id
(results/<machine-id>/check_benchmark.json) with a generous tolerance; skipped, with a line
saying so, where this machine has none. Exit 0 when all gates pass, 1 with a table of what regressed.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..config import Hyperparams, build_config
from ..errors import UsageError
from ..results import machine_id

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "benchmarks" / "check_reference.json"
BASELINES = ROOT / "results"  # <machine-id>/BASELINE_NAME: that machine's pytest-benchmark JSON
BASELINE_NAME = "check_benchmark.json"
BENCH_FILE = ROOT / "benchmarks" / "test_env_speed.py"
# cells of BENCH_FILE timed by the absolute gates; each steps its envs in one process (cells on
# both cores swing far more with a neighbour's load). A loaded shared machine still slows even one
# process time-sharing a core, so an absolute row fails only when more than 2.5x slower than the
# baseline; the ratio gates are the ones that catch smaller regressions. Load measurements:
# results/amd-epyc-2c/check_gates.md.
ABSOLUTE = {
    "sequential-baseline-1": "Pong agent steps/s, 1 env, baseline wrappers (pytest-benchmark median)",
    "sequential-fast-1": "Pong agent steps/s, 1 env, fast wrappers (pytest-benchmark median)",
    "sequential-fast-4": "Pong agent steps/s, 4 envs in turn, fast wrappers (pytest-benchmark median)",
}
ABSOLUTE_SLOWDOWN = 2.5



def _best_times(fns: dict, rounds: int) -> dict[str, float]:
    """Best-of-`rounds` time of each callable, rounds interleaved so load drifts hit all alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _ratio(slow_fast: dict, rounds: int) -> float:
    t = _best_times(slow_fast, rounds)
    return t["slow"] / t["fast"]


def gate_act_no_grad(rounds: int) -> float:
    """Action selection (Nature-DQN forward, batch 1): with no_grad vs building graphs."""
    from ..agent import EpsilonGreedy
    from ..model import NatureDQN
    torch.manual_seed(0)
    net = NatureDQN(4, 6)
    obs = np.random.default_rng(0).integers(0, 255, (1, 4, 84, 84), dtype=np.uint8)
    fast = EpsilonGreedy(net, 6, torch.device("cpu"), no_grad=True, seed=0)
    slow = EpsilonGreedy(net, 6, torch.device("cpu"), no_grad=False, seed=0)

    def run(agent):
        return lambda: [agent(obs, 0.0) for _ in range(50)]
    return _ratio({"slow": run(slow), "fast": run(fast)}, rounds)


def _env_steps(env, steps: int, seed: int):
    actions = np.random.default_rng(seed).integers(0, 6, steps)
    env.reset(seed=seed)

    def run():
        for a in actions:
            _, _, terminated, truncated, _ = env.step(int(a))
            if terminated or truncated:
                env.reset()
    return run


def gate_wrappers_fast(rounds: int) -> float:
    """Env step on Pong: the tweaked wrappers vs the baseline DeepMind stack."""
    from ..envs import make_env
    hp = Hyperparams()
    fast = make_env(hp, "fast")
    return _ratio({"slow": _env_steps(make_env(hp), 300, 1), "fast": _env_steps(fast, 300, 1)}, rounds)


def gate_vector_ale(rounds: int) -> float:
    """Agent steps/s on Pong: ale-py's C++ vector env (4 envs, sync, one thread) vs one baseline
    env. One thread: with a thread per core the ratio measured what the second core had free; on
    one thread it measures the C++ step and preprocessing plus our AleVecEnv bookkeeping against
    the Python wrappers (ranges measured: results/amd-epyc-2c/check_gates.md)."""
    from ..envs import make_env
    from ..envs.backends import AleVecEnv
    hp = Hyperparams()
    vec = AleVecEnv(hp, 4, num_threads=1)
    vec.reset(seed=1)
    single = make_env(hp)
    per_round = 600

    def run_vec():
        ids = np.arange(vec.num_envs)
        for _ in range(per_round // vec.num_envs):
            vec.send(np.zeros(vec.num_envs, np.int64), ids)
            ids = vec.recv().env_ids
    try:
        t = _best_times({"slow": _env_steps(single, per_round, 1), "fast": run_vec}, rounds)
    finally:
        vec.close()
    return t["slow"] / t["fast"]


def gate_replay_sample(rounds: int) -> float:
    """Sampling a batch of 32 Pong transitions as tensors: FrameReplay vs ptan's buffer + unpack."""
    from ..loops.ptan_reference import import_ptan, unpack_batch
    from ..replay import FrameReplay
    ptan = import_ptan()
    rng = np.random.default_rng(0)
    n = 5000
    frames = rng.integers(0, 255, (n + 4, 84, 84), dtype=np.uint8)
    replay = FrameReplay(n, (4, 84, 84), np.uint8)
    replay.start([0], frames[None, 0:4])
    ref = ptan.experience.ExperienceReplayBuffer(None, n)
    for i in range(n - 1):
        obs, nxt = frames[i:i + 4], frames[i + 1:i + 5]
        replay.add([0], [0.0], [False], nxt[None])
        ref._add(ptan.experience.ExperienceFirstLast(obs, 0, 0.0, nxt))
    cpu = torch.device("cpu")

    def fast():
        for _ in range(20):
            [torch.as_tensor(a) for a in replay.sample(32, rng)]

    def slow():
        for _ in range(20):
            unpack_batch(ref.sample(32), cpu, 0.99)
    return _ratio({"slow": slow, "fast": fast}, rounds)


def gate_play_loop(rounds: int) -> float:
    """Act + step + store (the warm-up phase, no learner): fastdqn's loop vs the ptan pipeline."""
    from ..train import train
    fps = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, preset in (("fast", "baseline"), ("slow", "ptan_reference")):
            best = 0.0
            for r in range(max(1, rounds // 2)):
                cfg = build_config(preset, None, {
                    "max_steps": 600, "replay_initial": 100_000, "progress": False, "device": "cpu",
                    "out": f"{tmp}/{name}{r}.json"})
                best = max(best, train_quiet(train, cfg)["fps_total"])
            fps[name] = best
    return fps["fast"] / fps["slow"]


def train_quiet(train, cfg) -> dict:
    import contextlib
    import io
    with contextlib.redirect_stderr(io.StringIO()):
        return train(cfg)


GATES = {
    "act_no_grad": (gate_act_no_grad, "action selection: no_grad vs autograd graphs (speed ratio)"),
    "wrappers_fast": (gate_wrappers_fast, "Pong env step: fast vs baseline wrappers"),
    "vector_ale": (gate_vector_ale, "Pong steps/s: ale_sync x4 on one thread vs one baseline env"),
    "replay_sample": (gate_replay_sample, "batch-32 sample: FrameReplay vs ptan buffer + unpack"),
    "play_loop": (gate_play_loop, "act+step+store: fastdqn loop vs ptan reference"),
}


def load_reference(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"reference {str(path)!r} not found (create it with `fastdqn check --update`)") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"reference {str(path)!r}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("machines"), dict) \
            or not isinstance(doc.get("tolerance"), (int, float)) or not 0 <= doc["tolerance"] < 1:
        raise UsageError(f"reference {str(path)!r}: expected {{\"tolerance\": 0..1, \"machines\": {{...}}}}")
    return doc


def measure(rounds: int) -> dict[str, float]:
    torch.set_num_threads(1)  # one thread: the 2-core CI machine's other core runs the env
    return {name: round(fn(rounds), 3) for name, (fn, _) in GATES.items()}


def measure_absolute(json_path: Path) -> str | None:
    """The absolute session: the ABSOLUTE cells of BENCH_FILE under pytest-benchmark, in a process
    of its own. The text of its JSON (written to json_path), None when the session failed."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--benchmark-json={json_path}",
           *[f"{BENCH_FILE}::test_env_steps_per_second[{cell}]" for cell in ABSOLUTE]]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0 or not json_path.exists():
        print(f"fastdqn: the pytest-benchmark session failed (exit {proc.returncode}):\n"
              f"{(proc.stdout + proc.stderr)[-3000:]}", file=sys.stderr)
        return None
    return json_path.read_text()


def speeds(doc, name: str, machine: str | None = None) -> dict[str, float]:
    """{cell: agent steps/s} of the ABSOLUTE cells in a pytest-benchmark JSON of BENCH_FILE;
    with `machine`, every cell must have been measured on that machine id."""
    try:
        infos = {bench["param"]: bench["extra_info"] for bench in doc["benchmarks"] if bench["param"] in ABSOLUTE}
        out = {cell: float(info["steps_per_s"]) for cell, info in infos.items()}
    except (TypeError, KeyError, ValueError) as e:
        raise UsageError(f"{name}: expected a pytest-benchmark JSON of {BENCH_FILE.name} "
                         f"with steps_per_s ({type(e).__name__}: {e})") from None
    for cell, info in infos.items():
        if machine and info.get("machine_id") != machine:
            raise UsageError(f"{name}: cell {cell} measured on {info.get('machine_id')!r}, not {machine!r}")
        if not out[cell] > 0:
            raise UsageError(f"{name}: cell {cell} has steps_per_s {out[cell]}, expected > 0")
    return out


def load_baseline(path: Path, machine: str) -> dict[str, float] | None:
    """This machine's committed absolute speeds, None where it has no baseline file."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"baseline {str(path)!r}: not valid JSON ({e})") from None
    return speeds(doc, f"baseline {str(path)!r}", machine)


def run_check(reference: Path = REFERENCE, rounds: int = 5, update: bool = False,
              baselines: Path | None = None) -> int:
    machine = machine_id()
    base_path = (baselines or BASELINES) / machine / BASELINE_NAME
    # bad input fails before anything is measured
    doc = load_reference(reference) if reference.exists() or not update else {"tolerance": 0.35, "machines": {}}
    base = None if update else load_baseline(base_path, machine)
    ratios = measure(rounds)
    session = None
    if update or base is not None:
        with tempfile.TemporaryDirectory() as tmp:
            session = measure_absolute(Path(tmp) / "session.json")
    if update:
        if session is None:
            return 1
        doc["machines"][machine] = ratios
        doc["machines"].setdefault("default", ratios)
        reference.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        base_path.parent.mkdir(parents=True, exist_ok=True)
        base_path.write_text(session)  # the session's own JSON, as pytest-benchmark wrote it
        print(f"reference for {machine} written to {reference}, pytest-benchmark baseline to {base_path}")
        return 0
    key = machine if machine in doc["machines"] else "default"
    ref, tol = doc["machines"][key], doc["tolerance"]
    rows = []  # (gate, kind, now, reference, verdict, what)
    for name, (_, what) in GATES.items():
        if name not in ref:
            rows.append((name, "ratio", f"{ratios[name]:.2f}", "-", "new (no reference)", what))
            continue
        floor = ref[name] * (1 - tol)
        rows.append((name, "ratio", f"{ratios[name]:.2f}", f"{ref[name]:.2f}",
                     "ok" if ratios[name] >= floor else f"REGRESSED (< {floor:.2f})", what))
    print(f"speed gate on {machine}: ratios vs reference '{key}' (tolerance {tol:.0%}; "
          "ratio = fast path speed / reference speed)")
    if base is None:
        print(f"absolute gates skipped: no pytest-benchmark baseline for {machine} ({base_path}); "
              "`fastdqn check --update` records one")
    else:
        print(f"absolute: agent steps/s vs {base_path} (fails when more than {ABSOLUTE_SLOWDOWN:g}x slower)")
        rows += absolute_rows(base, speeds(json.loads(session), "the session's pytest-benchmark JSON") if session else {})
    print("| gate | kind | now | reference | verdict | what |\n|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 1 if any(row[4].startswith("REGRESSED") for row in rows) else 0


def absolute_rows(base: dict[str, float], now: dict[str, float]) -> list[tuple]:
    rows = []
    for cell, what in ABSOLUTE.items():
        got = f"{now[cell]:,.0f}" if cell in now else "-"  # "-": the session failed
        if cell not in base:
            rows.append((cell, "absolute", got, "-", "new (no baseline)", what))
            continue
        floor = base[cell] / ABSOLUTE_SLOWDOWN
        rows.append((cell, "absolute", got, f"{base[cell]:,.0f}",
                     "ok" if now.get(cell, 0) >= floor else f"REGRESSED (< {floor:,.0f})", what))
    return rows
