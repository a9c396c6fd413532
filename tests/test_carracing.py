"""CarRacing-v3 with discrete actions (the `carracing` extra): its preprocessing against the
raw frames, the action set, episode ends, unclipped scores and a short run; without the extra, a
one-line error."""
from __future__ import annotations

import importlib.util
import json

import cv2
import numpy as np
import pytest

from fastdqn.cli import main
from fastdqn.config import build_config
from fastdqn.errors import UsageError

needs_box2d = pytest.mark.skipif(importlib.util.find_spec("Box2D") is None,
                                 reason="the carracing extra (gymnasium[box2d]) is not installed")


def test_without_the_extra_it_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "Box2D" else real(name, *a))
    with pytest.raises(UsageError, match=r"CarRacing-v3 needs gymnasium's box2d extra: pip install 'fastdqn\[carracing\]'"):
        build_config("carracing")


def test_other_backends_and_wrappers_are_refused():
    for setting in ({"backend": "ale_sync"}, {"wrappers": "fast"}):
        with pytest.raises(UsageError, match="has its own preprocessing"):
            build_config("carracing", None, setting)


@needs_box2d
def test_observations_are_the_cropped_grey_resized_raw_frames():
    import gymnasium as gym

    from fastdqn.envs import make_env
    cfg = build_config("carracing", None, {"frame_skip": 1})  # one physics frame per step: comparable
    env = make_env(cfg.hp)
    raw = gym.make("CarRacing-v3", continuous=False)
    assert env.action_space.n == 5 and env.observation_space.shape == (4, 84, 84)
    obs, _ = env.reset(seed=3)
    frame, _ = raw.reset(seed=3)
    for action in (3, 3, 1, 0, 2):
        obs, *_ = env.step(action)
        frame, *_ = raw.step(action)
    gray = np.sum(frame[:84] * np.array([0.2125, 0.7154, 0.0721]), axis=-1).astype(np.uint8)  # bar cut off
    assert obs.dtype == np.uint8 and np.array_equal(obs[-1], cv2.resize(gray, (84, 84), interpolation=cv2.INTER_AREA))
    env.close(), raw.close()


@needs_box2d
@pytest.mark.slow
def test_an_episode_is_250_agent_steps_with_the_raw_score():
    from fastdqn.envs import make_env
    env = make_env(build_config("carracing").hp)
    env.reset(seed=0)
    rewards, steps, speeds = [], 0, []
    while True:
        _, reward, terminated, truncated, info = env.step(3 if steps < 10 else 4)  # gas, then brake
        rewards.append(reward)
        steps += 1
        speeds.append(float(np.linalg.norm(env.unwrapped.car.hull.linearVelocity)))
        if terminated or truncated:
            break
    assert truncated and not terminated and steps == 250  # 1,000 physics frames / 4
    assert info["episode"]["l"] == 250 and info["episode"]["r"] == pytest.approx(sum(rewards))
    assert speeds[9] > speeds[0] + 10 and speeds[-1] < 1  # action 3 is the gas, 4 the brake
    assert -0.4 in [round(r, 6) for r in rewards]  # 4 frames' time penalty, a tile-less step: not clipped to -1
    env.close()


@needs_box2d
def test_a_short_run_records_its_frames_and_the_specs_stop_rule(tmp_path):
    out = tmp_path / "r.json"
    assert main(["train", "--preset", "carracing", "--envs", "1", "--backend", "sequential", "--max-steps", "260",
                 "--replay-initial", "100", "--progress", "false", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["frames_per_step"] == 4 and result["episodes"] == 1 and result["updates"] > 0
    assert result["stop_rule"]["reward"] == 900.0 and "CarRacing-v3" in result["stop_rule"]["source"]
