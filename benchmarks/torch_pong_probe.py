"""Supervised probe: how fast does Nature-DQN learn to see where the ball is against its paddle?

Frames come from torch_pong games under random play; the label is what a ball-tracking script
would do (up, down, or stay when the ball's center is within 3 px of the paddle's or no ball is in
play). The network is trained with cross-entropy (Adam, batch 32) and its held-out accuracy
printed every 500 steps, once per court gray level. A DQN has to find the same feature from a
far noisier signal, so a level that delays it here delays learning (see
results/amd-epyc-2c/torch_pong_learning.md).

    python benchmarks/torch_pong_probe.py --size 36 --backgrounds 87 0
"""
from __future__ import annotations

import argparse
import time

import torch

from fastdqn.envs import torch_pong as tp
from fastdqn.model import NatureDQN

NOOP, UP, DOWN = 0, 2, 3


def dataset(size: int, background: int, games: int = 256, steps: int = 200):
    env = tp.TorchPong(games, "cpu", stack=2, size=size, points=5, background=background)
    env.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    xs, ys = [], []
    for _ in range(steps):
        s = env.state
        offset = (s.ball_y + tp.BALL_H // 2) - (s.agent_y + tp.PADDLE_H // 2)
        label = torch.where(offset < -3 * tp.F, UP, torch.where(offset > 3 * tp.F, DOWN, NOOP))
        ys.append(torch.where(s.serve_timer > 0, NOOP, label).long())
        xs.append(env.obs.clone())
        env.step(torch.randint(0, 6, (games,), generator=gen))
    return torch.cat(xs), torch.cat(ys)


def probe(size: int, background: int, steps: int, lr: float, every: int = 500) -> list[float]:
    x, y = dataset(size, background)
    held = len(x) - 5000
    torch.manual_seed(0)
    net = NatureDQN(2, 6, size)
    opt = torch.optim.Adam(net.parameters(), lr)
    gen = torch.Generator().manual_seed(1)
    accuracy = []
    for step in range(steps + 1):
        if step % every == 0:
            with torch.no_grad():
                accuracy.append((net(x[held:]).argmax(1) == y[held:]).float().mean().item())
        idx = torch.randint(0, held, (32,), generator=gen)
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=36)
    ap.add_argument("--backgrounds", type=int, nargs="+", default=[87, 0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"held-out accuracy every 500 steps, {args.size}x{args.size} frames, Adam {args.lr:g}, batch 32")
    for background in args.backgrounds:
        t0 = time.perf_counter()
        acc = probe(args.size, background, args.steps, args.lr)
        print(f"court {background:3d}: " + " ".join(f"{a:.2f}" for a in acc) + f"  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
