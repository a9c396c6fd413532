"""What a run computes, counted, and how close the loop came to the machine's limit.

FLOPs are counted by torch's FlopCounterMode on the run's own network and Bellman loss (the
`double` and `loss` settings included), not written down by hand: one update sample is the
loss's forward passes and the backward of one row of a batch, one acting forward is the online
net on one observation. The peak is what `benchmarks/machine_peak.py` measured on this machine
(square matmuls, the run's thread count and dtype), read from results/<machine-id>/machine_peak.json.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .loss import dqn_loss, make_target

PEAK_FILE = "machine_peak.json"


@dataclass(frozen=True)
class FlopCount:
    per_update_sample: int  # forward passes and backward of the loss, per row of a batch
    per_act: int            # the acting forward, per observation


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_flops(net: nn.Module, obs_shape: tuple[int, ...], obs_dtype, hp, rows: int = 2) -> FlopCount:
    """Count on a CPU fp32 copy of `net` with a batch of `rows` (the counts are linear in it)."""
    net = copy.deepcopy(net).float().cpu()
    tgt = make_target(net)
    floating = obs_dtype.is_floating_point if isinstance(obs_dtype, torch.dtype) else np.issubdtype(obs_dtype, np.floating)
    if floating:
        obs = torch.rand(rows, *obs_shape)
    else:
        obs = torch.randint(0, 256, (rows, *obs_shape), dtype=torch.uint8)
    actions, zeros = torch.zeros(rows, dtype=torch.long), torch.zeros(rows)

    def update():
        dqn_loss(net, tgt, obs, actions, zeros, zeros + hp.gamma, obs, no_grad=True, kind=hp.loss,
                 double=hp.double).backward()

    def act():
        with torch.no_grad():
            net(obs)

    return FlopCount(_flops(update) // rows, _flops(act) // rows)


def load_peaks(machine_id: str, root: Path | None = None) -> list[dict]:
    """The peaks machine_peak.py measured on this machine; [] when it has not been run."""
    root = root or Path(__file__).resolve().parent.parent / "results"
    path = root / machine_id / PEAK_FILE
    if not path.exists():
        return []
    return json.loads(path.read_text()).get("peaks", [])


def find_peak(peaks: list[dict], device: str, threads: int, dtype: str) -> dict | None:
    device = device.split(":")[0]
    for p in peaks:
        if p["device"] == device and p["dtype"] == dtype and (device != "cpu" or p["threads"] == threads):
            return p
    return None


def compute_report(flops: FlopCount | None, telemetry, device: str, threads: int, bf16: bool,
                   peaks: list[dict]) -> dict | None:
    """Achieved GFLOP/s of the learn and act phases (their FLOPs over their phase seconds) and of
    the whole loop after the warm-up, and each one's share of the peak of the run's dtype.
    Acting forwards are counted as one per agent step."""
    if flops is None:
        return None
    seconds = telemetry.profile.seconds
    learn_flops = telemetry.updates * telemetry.samples_per_update * flops.per_update_sample
    act_flops = telemetry.steps * flops.per_act
    rate = lambda f, s: f / s / 1e9 if s > 0 else None
    fps = telemetry.fps()
    loop = None
    if fps and telemetry.replay_ratio() is not None:  # per agent step after the warm-up
        loop = fps * (telemetry.replay_ratio() * flops.per_update_sample + flops.per_act) / 1e9
    dtype = "bf16" if bf16 else "fp32"
    peak = find_peak(peaks, device, threads, dtype)
    out = {
        "flops_per_update_sample": flops.per_update_sample,
        "flops_per_act": flops.per_act,
        "counted_by": "torch.utils.flop_counter.FlopCounterMode",
        "learn_gflops": rate(learn_flops, seconds["learn"]),
        "act_gflops": rate(act_flops, seconds["act"]),
        "loop_gflops": loop,
        "peak": peak and {"dtype": dtype, "threads": peak.get("threads"), "gflops": peak["gflops"]},
        "peak_note": None if peak else f"no {dtype} peak measured for {device} at {threads} threads: "
                                       "run benchmarks/machine_peak.py",
    }
    for key in ("learn", "act", "loop"):
        value = out[f"{key}_gflops"]
        out[f"{key}_share_of_peak"] = value / peak["gflops"] if peak and value is not None else None
    return out
