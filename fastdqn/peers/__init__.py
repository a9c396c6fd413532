"""Peer trainers: other libraries' own training code run as bench cells, measured by fastdqn's
definitions (episodes are whole games with the raw score, the 100-episode stop rule, FPS after the
warm-up, wall clock from the start of training, the same budgets and result schema).

A matrix cell names one with `peer = "sb3_ppo"` instead of a preset. Each adapter (sb3.py,
evotorch.py) imports its library and calls it unchanged, with the hyperparameters the library's
authors published for the env (cited where they are written down). This module holds what the
matrix needs before anything runs: the registry, the settings a peer cell takes, its config.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from importlib import metadata

from ..config import Config, all_fields, build_config, parse_value
from ..errors import UsageError


@dataclass(frozen=True)
class Peer:
    name: str
    adapter: str       # the module of fastdqn.peers that runs it
    library: str       # the import name
    distribution: str  # the package, for its version
    extra: str         # fastdqn's optional extra that installs it
    algorithm: str


PEERS = {p.name: p for p in (
    Peer("sb3_ppo", "sb3", "stable_baselines3", "stable-baselines3", "peers", "PPO"),
    Peer("sb3_a2c", "sb3", "stable_baselines3", "stable-baselines3", "peers", "A2C"),
    Peer("sb3_dqn", "sb3", "stable_baselines3", "stable-baselines3", "peers", "DQN"),
    Peer("evotorch_pgpe", "evotorch", "evotorch", "evotorch", "evotorch", "PGPE"),
)}

# fastdqn settings a peer cell takes, with fastdqn's meaning and checks; the runner sets seed, out,
# logdir, name and progress. The others (replay, flags, ...) are fastdqn's own: a matrix's
# [defaults] may hold them for its fastdqn cells, a peer cell ignores them there.
SHARED = ("env", "stop_reward", "max_steps", "max_seconds", "device", "threads", "fps_every", "progress_every")
RUNNER = ("seed", "out", "logdir", "name", "progress")
# settings of one peer's own: EvoTorch's evaluation actors (Ray; 1 evaluates in the trainer itself)
WORKERS = field(default=1, metadata={"help": "EvoTorch: evaluation workers (Ray actors on a local instance; "
                                             "1 = no Ray, the trainer evaluates)", "min": 1, "max": None,
                                     "choices": None})
OWN = {"evotorch_pgpe": {"workers": WORKERS}}


def peer(name, where: str = "") -> Peer:
    if name not in PEERS:
        raise UsageError(f"{where}unknown peer {name!r}: expected one of {', '.join(PEERS)}")
    return PEERS[name]


def keys(name: str) -> tuple[str, ...]:
    """The settings peer `name` takes in a matrix cell."""
    return SHARED + tuple(OWN.get(name, {}))


def parse_setting(name: str, key: str, raw):
    """One setting of peer `name`, converted and checked as fastdqn checks its own."""
    own = OWN.get(name, {})
    if key in own:
        return parse_value(key, raw, own[key])
    table = all_fields()
    if key not in table or key not in SHARED + RUNNER:
        raise UsageError(f"setting {key!r} does not apply to peer {name}: expected one of {', '.join(keys(name))}")
    return parse_value(key, raw, table[key][1])


def require_library(p: Peer) -> None:
    """A one-line error naming the extra when the peer's library is not installed."""
    try:
        found = importlib.util.find_spec(p.library) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UsageError(f"peer {p.name} needs {p.distribution}: install the extra, pip install 'fastdqn[{p.extra}]'")


def library_version(p: Peer) -> str | None:
    try:
        return metadata.version(p.distribution)
    except metadata.PackageNotFoundError:
        return None


@dataclass
class PeerConfig(Config):
    """A peer run's settings: fastdqn's Config for what both share (env, seed, stop reward, run
    settings: one validation, one stop rule, the same output paths), plus the peer, its own
    settings and the library's hyperparameters as published for the env. fastdqn's replay,
    learner and flags do not apply and are not recorded."""
    peer: str = ""
    workers: int = 1
    library: dict = field(default_factory=dict)     # name, version, algorithm
    published: dict = field(default_factory=dict)   # the library's hyperparameters, as run
    source: str = ""                                # where they were published

    def to_dict(self) -> dict:
        hp = self.hp
        run = dataclasses.asdict(self.run)
        if "workers" in OWN.get(self.peer, {}):
            run["workers"] = self.workers
        return {"preset": self.peer, "peer": {**self.library, "hyperparams_source": self.source},
                "hyperparams": {"env": hp.env, "seed": hp.seed, "stop_reward": hp.stop_reward, **self.published},
                "flags": {}, "run": run}


def adapter(p: Peer):
    """The module that runs `p` (it imports its library only to run)."""
    if p.adapter == "sb3":
        from . import sb3 as module
    else:
        from . import evotorch as module
    return module


def peer_config(name: str, settings: dict) -> PeerConfig:
    """Validated, before anything runs: the peer, that its library is installed, every setting,
    the env against the published hyperparameters."""
    p = peer(name)
    require_library(p)
    values = {key: parse_setting(name, key, raw) for key, raw in settings.items()}
    own = {key: values.pop(key) for key in list(values) if key in OWN.get(name, {})}
    base = build_config(None, None, values)  # fastdqn's checks: env id, device, budgets
    hyperparams, source = adapter(p).published(p, base)
    return PeerConfig(hp=base.hp, flags=base.flags, run=base.run, preset=name, explicit=base.explicit, peer=name,
                      library={"name": p.distribution, "version": library_version(p), "algorithm": p.algorithm},
                      published=hyperparams, source=source, **own)


def cell_settings(name, defaults: dict, cell: dict, where: str) -> dict:
    """A matrix's peer cell: its settings (the [defaults] that apply to the peer, then its own),
    each checked now. `where` prefixes every error (the file and cell)."""
    peer(name, where)
    for key in cell:
        if key not in keys(name):
            raise UsageError(f"{where}key {key!r} does not apply to peer {name}: expected one of "
                             f"{', '.join(keys(name))}")
    settings = {**{k: v for k, v in defaults.items() if k in keys(name)}, **cell}
    try:
        peer_config(name, settings)
    except UsageError as e:
        raise UsageError(f"{where}{e}") from None
    return settings
