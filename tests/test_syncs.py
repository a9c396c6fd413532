"""Host syncs of the device pipeline. The device loop reads what the host needs one iteration late
(loops/device.HostReadback) and the device replay samples without a host sync, so on CUDA an iteration
queues its work without waiting for the device. On the CPU: the late reads equal the direct ones
(PongStep.ended_episodes, the loss). On CUDA (the GPU kit runs these): no operation of an
iteration syncs (torch.cuda.set_sync_debug_mode), and a whole run syncs a few times in all."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from fastdqn.agent import EpsilonGreedy
from fastdqn.cli import main
from fastdqn.config import Flags, Hyperparams
from fastdqn.envs.torch_pong import TorchPong
from fastdqn.learner import Learner
from fastdqn.loops.device import HostReadback
from fastdqn.model import make_net
from fastdqn.replay import FrameReplay

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_host_readback_reads_each_step_one_iteration_late():
    env = TorchPong(16, "cpu", size=36, points=1)  # 1-point games: many end
    env.reset(3)
    readback, before, ended = HostReadback(16, torch.device("cpu")), None, 0
    gen = torch.Generator().manual_seed(0)
    for t in range(80):
        step = env.step(torch.randint(0, 6, (16,), generator=gen))
        loss = torch.tensor(float(t)) if t % 3 else None
        episodes, last_loss = readback.pop()
        readback.push(step, loss)
        if before is not None:
            want_step, want_loss = before
            assert episodes == want_step.ended_episodes()  # the simple path: nonzero + tolist
            assert last_loss == (None if want_loss is None else want_loss.item())
            ended += len(episodes)
        before = (step, loss)
    assert ended > 10


def _pipeline(device):
    hp, flags = Hyperparams(pong_size=36, stack=2, replay_size=4096), Flags(adam="fused")
    env = TorchPong(64, device, stack=2, size=36, points=2)
    obs = env.reset(0)
    net = make_net(env.single_observation_space.shape, 6, 128).to(device)
    learner = Learner(net, hp, flags, device)
    replay = FrameReplay(4096, env.single_observation_space.shape, torch.uint8, 64, device=device, n_step=3)
    replay.start(None, obs)
    act = EpsilonGreedy(net, 6, device, True, seed=0)
    return env, obs, learner, replay, act, torch.Generator(device).manual_seed(1), HostReadback(64, device)


def _iteration(env, obs, learner, replay, act, gen, readback):
    actions = act(obs, 0.5)
    step = env.step(actions)
    replay.add(actions, step.rewards, step.terminated, step.next_obs)
    replay.start_where(step.done, step.obs)
    loss = None
    for _ in range(2):
        loss = learner.update(replay.sample(32, gen))
    learner.sync_target()
    readback.push(step, loss)
    return step.obs


def test_pipeline_pieces_run_on_the_cpu():  # the code path the CUDA test checks for syncs
    parts = _pipeline(torch.device("cpu"))
    obs = parts[1]
    for _ in range(5):
        parts[-1].pop()
        obs = _iteration(parts[0], obs, *parts[2:])
    episodes, loss = parts[-1].pop()
    assert parts[3].added == 5 * 64 and math.isfinite(loss) and episodes == []  # 2-point games last longer


@CUDA
def test_an_iteration_of_the_device_pipeline_never_syncs():
    parts = _pipeline(torch.device("cuda"))
    obs = _iteration(parts[0], parts[1], *parts[2:])  # warm-up: lazy state, cuBLAS handles
    for _ in range(10):
        parts[-1].pop()  # waits on the event of the iteration before (an explicit wait, by design)
        torch.cuda.set_sync_debug_mode("error")
        try:
            obs = _iteration(parts[0], obs, *parts[2:])
        finally:
            torch.cuda.set_sync_debug_mode("default")


@CUDA
def test_a_device_loop_run_syncs_a_few_times_in_all(tmp_path):
    out = tmp_path / "r.json"
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["train", "--env", "torch_pong", "--pong-size", "36", "--stack", "2", "--loop", "device",
                         "--envs", "256", "--replay-initial", "2048", "--replay-size", "20000", "--max-steps", "51200",
                         "--updates-per-step", "0.0625", "--batch-size", "64", "--device", "cuda",
                         "--progress", "false", "--out", str(out)]) == 0
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    # 200 iterations, 192 of them with 16 updates each; set-up and the result's reads may sync
    assert len(syncs) < 20, [f"{w.filename}:{w.lineno}" for w in syncs[:10]]
