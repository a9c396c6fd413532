"""`fastdqn check`: the speed regression gate.

Each gate is a speed RATIO measured within one run (fast path vs its slow reference, rounds
interleaved, best round of each), so it holds on noisy shared machines where absolute times do
not. The committed reference (benchmarks/check_reference.json) has the ratios per machine id;
a gate regresses when its ratio falls below reference x (1 - tolerance). Machines without a
reference of their own are compared with the `default` entry. Exit 0 when all gates pass,
1 with a table of what regressed.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..config import Hyperparams, build_config
from ..errors import UsageError
from ..results import machine_id

REFERENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "check_reference.json"
# Test-only switch: seconds of sleep added to every step of the fast wrappers in the gate's
# measurement, to prove the gate fails on a slowdown (tests/test_check.py).
SLOWDOWN_ENV = "FASTDQN_CHECK_INJECT_SLOWDOWN"


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


class _SlowStep:
    """Wraps an env; sleeps in every step (the test-only slowdown)."""

    def __init__(self, env, delay: float):
        self.env, self.delay = env, delay

    def reset(self, **kw):
        return self.env.reset(**kw)

    def step(self, action):
        time.sleep(self.delay)
        return self.env.step(action)


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
    delay = float(os.environ.get(SLOWDOWN_ENV, "0") or 0)
    if delay:
        fast = _SlowStep(fast, delay)
    return _ratio({"slow": _env_steps(make_env(hp), 300, 1), "fast": _env_steps(fast, 300, 1)}, rounds)


def gate_vector_ale(rounds: int) -> float:
    """Agent steps/s on Pong: ale-py's C++ vector env (4 envs, sync) vs one baseline env."""
    from ..envs import make_env, make_vec_env
    hp = Hyperparams()
    flags = build_config("baseline", None, {"backend": "ale_sync", "envs": 4}).flags
    vec = make_vec_env(hp, flags)
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
            unpack_batch(ref.sample(32), cpu)
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
    "vector_ale": (gate_vector_ale, "Pong steps/s: ale_sync x4 vs one baseline env"),
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


def run_check(reference: Path = REFERENCE, rounds: int = 5, update: bool = False) -> int:
    machine = machine_id()
    ratios = measure(rounds)
    if update:
        doc = load_reference(reference) if reference.exists() else {"tolerance": 0.35, "machines": {}}
        doc["machines"][machine] = ratios
        doc["machines"].setdefault("default", ratios)
        reference.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(f"reference for {machine} written to {reference}")
        return 0
    doc = load_reference(reference)
    key = machine if machine in doc["machines"] else "default"
    ref, tol = doc["machines"][key], doc["tolerance"]
    rows, regressed = [], []
    for name, (_, what) in GATES.items():
        if name not in ref:
            rows.append((name, ratios[name], None, "new (no reference)", what))
            continue
        floor = ref[name] * (1 - tol)
        ok = ratios[name] >= floor
        rows.append((name, ratios[name], ref[name], "ok" if ok else f"REGRESSED (< {floor:.2f})", what))
        if not ok:
            regressed.append(name)
    print(f"speed gate on {machine} vs reference '{key}' (tolerance {tol:.0%}); ratio = fast path speed / reference speed")
    print("| gate | ratio now | reference | verdict | what |\n|---|---|---|---|---|")
    for name, now, refv, verdict, what in rows:
        print(f"| {name} | {now:.2f} | {'-' if refv is None else f'{refv:.2f}'} | {verdict} | {what} |")
    return 1 if regressed else 0
