"""`fastdqn play CHECKPOINT --out FILE.gif`: one game of a saved policy, recorded as a GIF.

The agent plays on the training run's own env stack (the observations its network learned on);
what is recorded is the emulator's screen, 210x160 RGB with the game's score at its top, read
from ALE after each agent step (every frame_skip-th emulator frame), so the GIF plays at the
agent's real-time rate, 60 / frame_skip frames per second (to the GIF's hundredths of a
second: 14.3 for Pong). Pillow writes the GIF, and beside it a strip of STRIP_FRAMES screens
evenly spaced over the game, the last one included (its score is the final one), as
<name>.strip.png: what `report` shows where a GIF is too big to look at in a table. Atari envs
only: others render through extras (pygame) fastdqn does not install.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from .agent import EpsilonGreedy
from .checkpoint import build_net, load_checkpoint
from .config import build_config
from .errors import UsageError
from .evaluate import SEED_OFFSET
from .results import atomic_path

EMULATOR_HZ = 60  # Atari 2600 frames per second
STRIP_FRAMES = 8


def record(checkpoint: str, out: str, epsilon: float = 0.0, seed: int | None = None, max_steps: int = 0,
           every: int = 1, progress: bool = True) -> dict:
    """Plays one game (or its first max_steps agent steps), writes every `every`-th screen to
    `out`; returns what it played: score, agent steps, frames written, the GIF's frame rate."""
    from .envs.ale_common import is_atari
    from .envs.atari import make_env
    if not str(out).lower().endswith(".gif"):
        raise UsageError(f"--out {out}: expected a .gif file")
    if not 0.0 <= epsilon <= 1.0:
        raise UsageError(f"--epsilon {epsilon}: expected a value in [0, 1]")
    if every < 1 or max_steps < 0:
        raise UsageError(f"--every {every} / --max-steps {max_steps}: expected every >= 1 and max-steps >= 0")
    doc = load_checkpoint(checkpoint)
    saved = doc["config"]
    cfg = build_config(saved.get("preset"), None, {**saved["hyperparams"], **saved["flags"]})
    if not is_atari(cfg.hp.env):
        raise UsageError(f"play records Atari games from the emulator's screen; {cfg.hp.env} is not one")
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    seed = cfg.hp.seed + SEED_OFFSET if seed is None else seed
    env = make_env(cfg.hp, cfg.flags.wrappers)  # the stack it trained on (ALE's vector env matches the baseline's)
    try:
        net = build_net(doc, env.observation_space.shape, int(env.action_space.n)).eval()
        policy = EpsilonGreedy(net, int(env.action_space.n), torch.device("cpu"), True, seed=seed)
        ale = env.unwrapped.ale
        obs, _ = env.reset(seed=seed)
        frames, steps, start = [ale.getScreenRGB()], 0, time.monotonic()
        ended = False
        while not ended and not (max_steps and steps >= max_steps):
            action = int(policy(obs[None], epsilon)[0])
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            ended = terminated or truncated
            if steps % every == 0 or ended:
                frames.append(ale.getScreenRGB())
            if progress and steps % 500 == 0:
                print(f"play: {steps:,} agent steps ({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
        # the raw game score (RecordEpisodeStatistics sums it before reward clipping)
        score = float(info["episode"]["r"]) if ended else float(env.get_wrapper_attr("episode_returns"))
    finally:
        env.close()
    # GIF frame times are whole hundredths of a second: the nearest to the agent's real-time rate
    centis = max(2, round(100 * cfg.hp.frame_skip * every / EMULATOR_HZ))
    write_gif(out_path, frames, centis * 10)
    strip = strip_path(out_path)
    write_strip(strip, frames)
    fps = 100 / centis
    played = {"gif": str(out_path), "strip": str(strip), "score": score, "whole_game": ended, "agent_steps": steps,
              "frames": len(frames), "fps": fps, "checkpoint_step": doc["step"], "epsilon": epsilon, "seed": seed}
    return played


def write_gif(path: Path, frames: list[np.ndarray], ms_per_frame: int) -> None:
    """Pillow's GIF writer, through a temporary file (a stopped write leaves no half GIF). Pillow
    merges a frame identical to the one before into it, adding up their times."""
    from PIL import Image
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)


def strip_path(gif: Path) -> Path:
    return gif.with_suffix(".strip.png")


def strip_indices(count: int, n: int = STRIP_FRAMES) -> list[int]:
    """n indices spread evenly over count frames, the first and the last included."""
    if count <= n:
        return list(range(count))
    return [round(i * (count - 1) / (n - 1)) for i in range(n)]


def write_strip(path: Path, frames: list[np.ndarray]) -> None:
    """The frames at strip_indices side by side, one PNG (Pillow), written atomically."""
    from PIL import Image
    picked = np.concatenate([frames[i] for i in strip_indices(len(frames))], axis=1)
    with atomic_path(path) as tmp:
        Image.fromarray(picked).save(tmp, format="PNG")
