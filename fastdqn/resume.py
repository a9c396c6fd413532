"""Resumable runs: `train --resume STATE` goes on where a stopped run ended.

With `resumable = "yes"` (or "with_replay") the serial loop writes its whole state beside the
result as `<name>.state.pt` when the run ends for any reason, and with `checkpoint_every` at each
checkpoint: the online and target nets, Adam's state, the agent-step, episode and update counters,
the update and target-sync schedules (epsilon follows the agent step), the random generators of
exploration and replay sampling, what telemetry has measured (the reward curve and window, FPS
samples, phase seconds, the clock) and, with "with_replay", the replay itself (100k Pong
transitions: ~0.7 GB; with prioritized replay, its priorities too). Plain tensors, numbers and strings: read with torch.load(weights_only=True).

The envs cannot be saved: a resumed run starts new games (seeded with the run's seed plus the
agent step it resumes at), and the games that were running when it stopped end there, unscored
and without a last transition. So a resume continues every counter and schedule exactly, but
not the same games; without the replay it also refills the replay to `replay_initial` (those
steps count as agent steps, learning pauses) before learning goes on.

The resumed run keeps its hyperparameters and flags (given ones must match); run settings
(budgets, output) may change. Its clock goes on from the earlier parts' seconds, so times in the
result are the run's time in training, not the wall time between its start and its end, and the
result's `resumed` block lists every part (steps, seconds, commit) so a time to 17 of a resumed run
is never read as one run's.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .checkpoint import save_atomic
from .errors import UsageError

FORMAT = "fastdqn-run-state"
VERSION = 1
REPLAY_ARRAYS = ("frames", "actions", "rewards", "terminated", "has_transition", "pos", "written")


def state_path(result_path: str | os.PathLike) -> Path:
    """Beside the result: runs/x/result.json -> runs/x/result.state.pt."""
    return Path(result_path).with_suffix(".state.pt")


def _tensor(a) -> torch.Tensor:
    return a.detach().cpu().clone() if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a, copy=True))


def _rng_state(rng):
    return {"torch": rng.get_state()} if isinstance(rng, torch.Generator) else {"numpy": rng.bit_generator.state}


def _set_rng_state(rng, state) -> None:
    if isinstance(rng, torch.Generator):
        rng.set_state(state["torch"])
    else:
        rng.bit_generator.state = state["numpy"]


def telemetry_state(t) -> dict:
    r = t.rewards
    return {"seconds": t.now(), "steps": t.steps, "updates": t.updates, "curve": t.curve, "fps_series": t.fps_series,
            "learn_start": list(t.learn_start) if t.learn_start else None,
            "avg_loss": None if t.avg_loss is None else float(t.avg_loss),
            "profile": dict(t.profile.seconds), "window": list(r.window), "ema": r.ema, "best_mean": r.best_mean,
            "parts": t.all_parts()}


def restore_telemetry(t, s: dict) -> None:
    r = t.rewards
    t.clock_offset, t.steps, t.updates = s["seconds"], s["steps"], s["updates"]
    t.curve, t.fps_series = [list(row) for row in s["curve"]], [list(row) for row in s["fps_series"]]
    t.learn_start = tuple(s["learn_start"]) if s["learn_start"] else None
    t.avg_loss = s["avg_loss"]
    t.profile.seconds.update(s["profile"])
    r.window.extend(s["window"])
    r.ema, r.best_mean = s["ema"], s["best_mean"]
    t.parts = [dict(p) for p in s["parts"]]
    t.part_start = (s["steps"], s["seconds"])


def save_state(path: Path, cfg, loop: dict, telemetry, with_replay: bool) -> None:
    """loop: the serial loop's learner, schedule, collector, policy, rng and replay."""
    learner, schedule, replay = loop["learner"], loop["schedule"], loop["replay"]
    doc = {"format": FORMAT, "version": VERSION, "fastdqn_version": __version__, "config": cfg.to_dict(),
           "agent_steps": int(loop["collector"].steps),
           "net": {k: _tensor(v) for k, v in learner.net.state_dict().items()},
           "tgt_net": {k: _tensor(v) for k, v in learner.tgt_net.state_dict().items()},
           "optimizer": learner.optimizer.state_dict(),
           "schedule": {"done": schedule.done, "last_sync": schedule.last_sync},
           "policy_rng": loop["policy"].gen.get_state(), "sample_rng": _rng_state(loop["rng"]),
           "torch_rng": torch.get_rng_state(), "telemetry": telemetry_state(telemetry),
           "stop_rule": [telemetry.rewards.bound, telemetry.rewards.source],
           "replay": None}
    if with_replay:
        doc["replay"] = {name: _tensor(getattr(replay, name)) for name in REPLAY_ARRAYS}
        doc["replay"]["added"] = int(replay.added)
        if replay.prioritized:
            doc["replay"]["q"], doc["replay"]["max_priority"] = _tensor(replay.q), replay.max_priority
    save_atomic(path, doc)


def load_state(path: str | os.PathLike) -> dict:
    """The state's dict; a one-line UsageError for a missing file or one that is not a state."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"resume {str(path)!r}: no such file")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"resume {str(path)!r}: not a fastdqn run state ({type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f"resume {str(path)!r}: not a fastdqn run state (no {FORMAT!r} tag; a checkpoint "
                         "<name>.pt holds the net only: resume takes <name>.state.pt)")
    if doc.get("version") != VERSION:
        raise UsageError(f"resume {str(path)!r}: version {doc.get('version')!r}, expected {VERSION}")
    return doc


def resumed_values(doc: dict, given: dict, group_of: dict) -> dict:
    """The settings a resumed run takes: the saved run's, with the given run settings; a given
    hyperparameter or flag that differs from the saved run's is a UsageError."""
    saved = doc["config"]
    values = {**saved["hyperparams"], **saved["flags"], **saved["run"]}
    if doc["stop_rule"][1] != "set":  # derived from the env as before, not pinned as if given
        del values["stop_reward"]
    for name, value in given.items():
        if group_of[name] != "run" and value != values.get(name, value):
            raise UsageError(f"--resume goes on with the run's own settings: {name} {value!r} given, the run has "
                             f"{values[name]!r}")
        values[name] = value
    return values


def restore(doc: dict, loop: dict, telemetry) -> None:
    """Put the saved state into a freshly built serial loop (before its collector starts games)."""
    learner, schedule, replay = loop["learner"], loop["schedule"], loop["replay"]
    learner.net.load_state_dict(doc["net"])
    learner.tgt_net.load_state_dict(doc["tgt_net"])
    learner.optimizer.load_state_dict(doc["optimizer"])
    schedule.done, schedule.last_sync = doc["schedule"]["done"], doc["schedule"]["last_sync"]
    loop["policy"].gen.set_state(doc["policy_rng"])
    _set_rng_state(loop["rng"], doc["sample_rng"])
    torch.set_rng_state(doc["torch_rng"])
    if doc["replay"] is not None:
        saved = doc["replay"]
        for name in REPLAY_ARRAYS:
            target = getattr(replay, name)
            if tuple(target.shape) != tuple(saved[name].shape):
                raise UsageError(f"resume: the saved replay's {name} has shape {tuple(saved[name].shape)}, this "
                                 f"run's {tuple(target.shape)}")
            if isinstance(target, torch.Tensor):
                target.copy_(saved[name])
            else:
                target[...] = saved[name].numpy()
        replay.added = saved["added"]
        if replay.prioritized:
            replay.q[...], replay.max_priority = saved["q"].numpy(), saved["max_priority"]
    else:  # learning waits until the replay holds replay_initial transitions again
        schedule.first_step = doc["agent_steps"] + schedule.first_step
        schedule.done = 0
    restore_telemetry(telemetry, doc["telemetry"])
