"""The trained network on disk: what `train` writes beside its result when a run ends (solved, at
its budget, stopped or failed), and what a later command loads.

A checkpoint holds plain types and tensors only and is read with `torch.load(weights_only=True)`,
so loading one never unpickles arbitrary objects: a format tag and version, the fastdqn version,
the run's config, the observation shape and action count the network was built for, the agent
step, and the online network's state dict.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .errors import UsageError
from .results import atomic_path
from .model import make_net

FORMAT, VERSION = "fastdqn-checkpoint", 1


def checkpoint_path(result_path: str | os.PathLike) -> Path:
    """Beside the result: runs/x/result.json -> runs/x/result.pt."""
    return Path(result_path).with_suffix(".pt")


def save_checkpoint(path: Path, net: nn.Module, config: dict, obs_shape, n_actions: int, step: int) -> None:
    """Written to a temporary file and renamed, so a stop mid-write leaves no half checkpoint."""
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    doc = {"format": FORMAT, "version": VERSION, "fastdqn_version": __version__, "config": config,
           "obs_shape": [int(d) for d in obs_shape], "n_actions": int(n_actions), "step": int(step),
           "state_dict": state}
    save_atomic(path, doc)


def save_atomic(path: Path, doc: dict) -> None:
    """torch.save through a temporary file renamed over `path`: a stop mid-write leaves no half file."""
    with atomic_path(path) as tmp:
        torch.save(doc, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's dict; UsageError (one line) for a missing file or one that is not a
    fastdqn checkpoint of this version."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {str(path)!r}: no such file")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore")
            doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or one holding other objects than weights_only allows
        raise UsageError(f"checkpoint {str(path)!r}: not a fastdqn checkpoint ({type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f"checkpoint {str(path)!r}: not a fastdqn checkpoint (no {FORMAT!r} tag)")
    if doc.get("version") != VERSION:
        raise UsageError(f"checkpoint {str(path)!r}: version {doc.get('version')!r}, expected {VERSION}")
    return doc


def build_net(doc: dict, obs_shape=None, n_actions: int | None = None) -> nn.Module:
    """The checkpoint's network with its weights; given the env's observation shape and action
    count, a checkpoint made for another env or network is a UsageError."""
    shape, actions = tuple(doc["obs_shape"]), doc["n_actions"]
    if obs_shape is not None and (tuple(obs_shape) != shape or n_actions != actions):
        raise UsageError(f"checkpoint made for observations {shape} and {actions} actions (env "
                         f"{doc['config']['hyperparams']['env']}), not {tuple(obs_shape)} and {n_actions}")
    hp = doc["config"]["hyperparams"]
    net = make_net(shape, actions, hp.get("mlp_hidden", 128), hp.get("dueling", False))
    try:
        net.load_state_dict(doc["state_dict"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise UsageError(f"checkpoint's weights do not fit its network: {first}") from None
    return net
