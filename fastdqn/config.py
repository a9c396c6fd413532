"""Typed run configuration: the book's hyperparameters, the optimization flags, run settings.

Every field is settable from the CLI (``--field-name VALUE``) and from a TOML file (a table per
group). Precedence: defaults < preset < TOML file < CLI. Schedules are in agent steps.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import UsageError


TORCH_PONG = "torch_pong"  # fastdqn's batched Pong on tensors (not a gymnasium id)


def _f(default, help, *, min=None, max=None, choices=None):
    return field(default=default, metadata={"help": help, "min": min, "max": max, "choices": choices})


@dataclass
class Hyperparams:
    """The book's Pong values (Lapan, Deep RL Hands-On, ch. 9), schedules in agent steps."""
    env: str = _f("PongNoFrameskip-v4", "gymnasium env id (Atari ids get the DeepMind stack), "
                                        "or torch_pong (fastdqn's batched Pong on tensors)")
    replay_size: int = _f(100_000, "replay capacity in transitions", min=1)
    replay_initial: int = _f(10_000, "transitions in the replay before learning starts", min=1)
    target_sync_steps: int = _f(1_000, "agent steps between target-net syncs "
                                       "(the book's 1000 training iterations at 1 update/step)", min=1)
    epsilon_start: float = _f(1.0, "initial exploration rate", min=0.0, max=1.0)
    epsilon_final: float = _f(0.02, "final exploration rate", min=0.0, max=1.0)
    epsilon_steps: int = _f(100_000, "agent steps of the linear epsilon decay", min=1)
    lr: float = _f(1e-4, "Adam learning rate", min=0.0)
    gamma: float = _f(0.99, "discount", min=0.0, max=1.0)
    batch_size: int = _f(32, "SGD batch size", min=1)
    loss: str = _f("mse", "Bellman loss", choices=("mse", "huber"))
    seed: int = _f(123, "seed for env, network init and exploration", min=0)
    stop_reward: float = _f(17.0, "stop when the mean of the last 100 episodes reaches this (unset: the env "
                                  "spec's reward_threshold where it has one, CartPole-v1 475; else 17, Pong's)")
    # Atari preprocessing (DeepMind / book stack)
    noop_max: int = _f(30, "max random no-op actions at reset (DeepMind preprocessing)", min=0)
    frame_skip: int = _f(4, "emulator frames per agent step (action repeat)", min=1)
    stack: int = _f(4, "stacked frames per observation (the tweaked wrappers' step uses 2)", min=1)
    max_episode_frames: int = _f(108_000, "emulator-frame cap of an episode", min=1)
    mlp_hidden: int = _f(128, "hidden units of the MLP head (vector observations)", min=1)
    # torch_pong (fastdqn's batched Pong on tensors)
    pong_size: int = _f(84, "torch_pong: side of the rendered square frame in pixels "
                              "(36 is the smallest Nature-DQN takes)", min=36, max=256)
    pong_points: int = _f(21, "torch_pong: points that win a game (ends the episode)", min=1)
    pong_background: int = _f(87, "torch_pong: gray level of the court (87: ALE Pong's; 0: black, objects "
                                   "on zero, which a fresh network picks out far sooner)", min=0, max=255)
    # recipe
    updates_per_step: float = _f(0.0, "SGD updates of batch_size per agent step; 0 = the book's schedule "
                                      "(one update of batch_size x envs per round of envs steps)", min=0.0)
    n_step: int = _f(1, "N-step returns: up to N rewards discounted by gamma^k, bootstrapped from the state "
                        "N steps on; cut at episode ends (1 = the book)", min=1, max=100)
    double: bool = _f(False, "Double DQN target: the online net picks the next action, the target net "
                             "values it (off = the book's max over the target net)")
    adam_eps: float = _f(1e-8, "Adam's epsilon, added to the root of its second moment (1e-8: torch's "
                               "default, the book's; Rainbow uses 1.5e-4)", min=0.0)
    dueling: bool = _f(False, "dueling head (Wang et al. 2016): Q = V + A - mean(A) from two streams of "
                              "the head's size (off = the book's single head)")
    priority_alpha: float = _f(0.0, "prioritized replay (Schaul et al. 2016, proportional): sample transition "
                                    "i with probability p_i^alpha / sum p^alpha, p = |TD error| (0 = uniform, "
                                    "the book's; 0.6 is the paper's)", min=0.0)
    priority_beta: float = _f(0.4, "prioritized replay: the importance-weight exponent at the start, raised "
                                   "linearly to 1 over priority_beta_steps agent steps", min=0.0, max=1.0)
    priority_beta_steps: int = _f(1_000_000, "prioritized replay: agent steps over which beta reaches 1", min=1)


@dataclass
class Flags:
    """Optimizations. Each acts where a `flag site: <name>` comment marks it (a flag that acts in
    two places is marked at both; tests/test_architecture.py counts them)."""
    no_grad: bool = _f(True, "action selection and target net without autograd (off = slow_grads)")
    loop: str = _f("serial", "pipeline: fastdqn's own, the book's ptan reference, or the device-resident "
                             "one (env torch_pong, replay and action selection on the torch device: "
                             "no host copies in the hot path)", choices=("serial", "ptan", "device"))
    envs: int = _f(1, "env copies per player; one batched forward pass per round, batch_size x envs "
                      "per SGD step, one SGD step per round (the book's N envs)", min=1)
    backend: str = _f("sequential", "how the env copies step: one after another in this process, "
                                    "gymnasium AsyncVectorEnv subprocesses, or ale-py's C++ vector env "
                                    "(sync step, or async send/recv)",
                      choices=("sequential", "gym_async", "ale_sync", "ale_async"))
    async_batch: int = _f(0, "ale_async: envs returned per recv (0 = half of envs)", min=0)
    wrappers: str = _f("baseline", "preprocessing stack: the book's DeepMind stack or the tweaked cheaper one",
                       choices=("baseline", "fast"))
    parallel: bool = _f(False, "separate play process(es) and a train process over a queue")
    players: int = _f(1, "play processes (parallel), each with its own envs and seed", min=1)
    weight_sync_steps: int = _f(1000, "parallel: agent steps between weight copies to the players "
                                       "(the players' policy staleness)", min=1)
    replay: str = _f("host", "serial and parallel loops: where the replay lives, a numpy ring on the host "
                             "or on the torch device (frames stored once, sampled by on-device gather); "
                             "the device loop always keeps it on the device", choices=("host", "device"))
    pinned: bool = _f(False, "host envs/replay: copy observations and batches to the device through "
                             "reused pinned staging buffers (non-blocking)")
    compile: bool = _f(False, "torch.compile the update step (loss, backward, optimizer step)")
    cuda_graph: bool = _f(False, "capture the whole update step in one CUDA graph and replay it (CUDA only)")
    adam: str = _f("default", "Adam implementation: torch's default choice, foreach (multi-tensor) or fused",
                   choices=("default", "foreach", "fused"))
    bf16: bool = _f(False, "bf16 autocast for the forward passes of the update (weights stay fp32)")
    compile_env: bool = _f(False, "torch_pong: torch.compile the games' step (physics and render fused into "
                                  "a few kernels instead of some hundreds of small ones)")


@dataclass
class RunSettings:
    """Where and how long to run. Not part of the algorithm."""
    device: str = _f("auto", "torch device: auto (cuda if present), cpu, cuda, cuda:N")
    max_steps: int = _f(0, "agent-step budget (0 = none)", min=0)
    max_seconds: float = _f(0.0, "wall-clock budget in seconds (0 = none)", min=0.0)
    out: str = _f("", "result JSON path (default: runs/<name>/result.json)")
    logdir: str = _f("", "TensorBoard log dir (default: beside the result)")
    name: str = _f("", "run name (default: preset-seed)")
    progress: bool = _f(True, "show the run's progress line (redrawn on a terminal, plain lines in a log)")
    progress_every: float = _f(30.0, "seconds between progress lines when the output is not a terminal",
                               min=0.1)
    fps_every: int = _f(1_000, "agent steps between FPS samples / scalar logs", min=1)
    threads: int = _f(0, "torch intra-op threads of the training process (0 = torch's default: one per "
                         "core; 1 keeps a shared or busy machine from collapsing under spin-waits)", min=0)
    checkpoint_every: int = _f(0, "also write the net every this many agent steps, beside the result as "
                                  "<name>.step<N>.pt (0 = only at the end)", min=0)
    eval_episodes: int = _f(0, "when the run ends (not on a stop): play this many greedy games with its "
                               "checkpoint (fastdqn eval), recorded in the result as eval (0 = none)", min=0)
    resumable: str = _f("no", "write the run's whole state beside the result as <name>.state.pt when it ends "
                              "and at each checkpoint_every, for --resume (serial loop; with_replay: the replay "
                              "too)", choices=("no", "yes", "with_replay"))
    resume: str = _f("", "a <name>.state.pt to go on from: the run's own hyperparameters and flags, these "
                         "run settings (budgets count both parts)")
    stall_seconds: float = _f(120.0, "parallel: a play process that shows no sign of life for this long "
                                     "(stopped, stuck in its env) ends the run as failed", min=1.0)


GROUPS = {"hyperparams": Hyperparams, "flags": Flags, "run": RunSettings}

_ALE_VECTOR = {"backend": "ale_async", "envs": 8, "async_batch": 4}
PRESETS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "slow_grads": {"no_grad": False},
    "ptan_reference": {"loop": "ptan"},
    "n_envs": {"envs": 3},
    "parallel": {"parallel": True},
    "new_wrappers_n_envs": {"wrappers": "fast", "stack": 2, "envs": 3},
    "new_wrappers_parallel": {"wrappers": "fast", "stack": 2, "parallel": True},
    "ale_vector": _ALE_VECTOR,
    "solve_recipe": {**_ALE_VECTOR, "n_step": 3, "double": True, "updates_per_step": 0.125, "bf16": True,
                     "compile": True},
    # physics on the CPU (~100 frames/s per core): env copies in processes; 250 agent steps a game
    "carracing": {"env": "CarRacing-v3", "backend": "gym_async", "envs": 2, "n_step": 3, "double": True,
                  "updates_per_step": 0.25},
}
PRESET_DOCS = {
    "baseline": "the book's baseline: 1 env, DeepMind wrappers, 1 env step + 1 SGD step per iteration",
    "slow_grads": "baseline with action selection and target net building autograd graphs",
    "ptan_reference": "the same experiment through ptan's own agent, experience source and buffer",
    "n_envs": "the book's N=3 env copies stepped in turn, one batched forward pass, batch 3 x 32",
    "parallel": "a play process steps the env and selects actions, the trainer learns; chunks over a queue",
    "new_wrappers_n_envs": "the tweaked cheaper wrappers with 2 stacked frames, 3 envs",
    "new_wrappers_parallel": "the tweaked cheaper wrappers with 2 stacked frames, play/train processes",
    "ale_vector": "modern: ale-py's C++ vector env, 8 envs stepped on threads, async batches of 4",
    "solve_recipe": "ale_vector with 3-step returns, Double DQN, 1 update of 32 per 8 agent steps, bf16, "
                    "the compiled learner: the first recipe to reach 17 on 2 CPU cores",
    "carracing": "CarRacing-v3, 5 discrete actions, its own preprocessing, 2 envs in processes, 3-step "
                 "Double DQN, 1 update of 32 per 4 agent steps: a starting point, not a tuned recipe",
}


@dataclass
class Config:
    hp: Hyperparams = field(default_factory=Hyperparams)
    flags: Flags = field(default_factory=Flags)
    run: RunSettings = field(default_factory=RunSettings)
    preset: str = "baseline"
    explicit: set = field(default_factory=set)  # names a preset, file or the command line set

    def groups(self):
        return {"hyperparams": self.hp, "flags": self.flags, "run": self.run}

    def to_dict(self) -> dict:
        d = {g: dataclasses.asdict(obj) for g, obj in self.groups().items()}
        d["preset"] = self.preset
        return d


def all_fields() -> dict[str, tuple[str, dataclasses.Field]]:
    """Field name -> (group, field). Names are unique across groups."""
    out = {}
    for g, cls in GROUPS.items():
        for f in fields(cls):
            out[f.name] = (g, f)
    return out


def parse_value(name: str, raw: Any, f: dataclasses.Field) -> Any:
    """Convert (from CLI strings or TOML values) and validate one field; UsageError otherwise."""
    kind = type(f.default)
    meta = f.metadata
    try:
        if kind is bool:
            if isinstance(raw, bool):
                value = raw
            elif isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
                value = True
            elif isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError
        elif kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value = int(raw.replace("_", "")) if isinstance(raw, str) else int(raw)
        elif kind is float:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
            if not math.isfinite(value):  # NaN or inf: not writable to the result JSON
                raise ValueError
        else:
            if not isinstance(raw, str):
                raise ValueError
            value = raw
    except (ValueError, TypeError):
        raise UsageError(f"invalid value {raw!r} for {name}: expected {kind.__name__}") from None
    if meta.get("choices") and value not in meta["choices"]:
        raise UsageError(f"invalid value {value!r} for {name}: expected one of {', '.join(meta['choices'])}")
    if meta.get("min") is not None and value < meta["min"]:
        raise UsageError(f"invalid value {value!r} for {name}: expected >= {meta['min']}")
    if meta.get("max") is not None and value > meta["max"]:
        raise UsageError(f"invalid value {value!r} for {name}: expected <= {meta['max']}")
    return value


def apply(cfg: Config, overrides: dict[str, Any], source: str) -> None:
    """Set fields by name, validating each; `source` names where they came from in errors."""
    table = all_fields()
    for name, raw in overrides.items():
        if name not in table:
            raise UsageError(f"unknown setting {name!r} in {source}")
        group, f = table[name]
        setattr(cfg.groups()[group], name, parse_value(name, raw, f))
        cfg.explicit.add(name)


def preset_config(preset: str) -> Config:
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    cfg = Config(preset=preset)
    apply(cfg, PRESETS[preset], f"preset {preset}")
    return cfg


def load_toml(path: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {path!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"malformed TOML in {path}: {e}") from None


def flatten_toml(doc: dict, path: str) -> tuple[str | None, dict]:
    """A config TOML: optional top-level `preset`, tables [hyperparams], [flags], [run]."""
    preset = None
    flat: dict[str, Any] = {}
    table = all_fields()
    for key, value in doc.items():
        if key == "preset":
            if not isinstance(value, str):
                raise UsageError(f"invalid value {value!r} for preset in {path}: expected a string")
            preset = value
        elif key in GROUPS and isinstance(value, dict):
            for name, v in value.items():
                if name not in table or table[name][0] != key:
                    raise UsageError(f"unknown key {key}.{name} in {path}")
                flat[name] = v
        else:
            raise UsageError(f"unknown key {key!r} in {path}: expected preset, "
                             f"{', '.join('[' + g + ']' for g in GROUPS)}")
    return preset, flat


def build_config(preset: str | None = None, toml_path: str | None = None,
                 cli: dict[str, Any] | None = None) -> Config:
    file_preset, file_values = (None, {})
    if toml_path:
        file_preset, file_values = flatten_toml(load_toml(toml_path), toml_path)
    cfg = preset_config(preset or file_preset or "baseline")
    apply(cfg, file_values, toml_path or "")
    apply(cfg, cli or {}, "command line")
    validate(cfg)
    return cfg


def validate(cfg: Config, device=None) -> None:
    """Every check of a whole configuration, each a one-line UsageError; with the resolved torch
    device, also what that device cannot run (check_flags)."""
    if cfg.hp.replay_initial > cfg.hp.replay_size:
        raise UsageError(f"replay_initial {cfg.hp.replay_initial} exceeds replay_size {cfg.hp.replay_size}")
    if not cfg.hp.updates_per_step and cfg.hp.batch_size * cfg.flags.envs > cfg.hp.replay_initial:
        raise UsageError(f"batch_size {cfg.hp.batch_size} x envs {cfg.flags.envs} exceeds replay_initial "
                         f"{cfg.hp.replay_initial}")
    if cfg.hp.batch_size > cfg.hp.replay_initial:
        raise UsageError(f"batch_size {cfg.hp.batch_size} exceeds replay_initial {cfg.hp.replay_initial}")
    f, hp = cfg.flags, cfg.hp
    if f.loop == "ptan" and (f.parallel or f.envs > 1 or f.wrappers != "baseline" or f.backend != "sequential"
                             or f.replay != "host" or f.pinned or f.compile or f.cuda_graph or f.adam != "default"
                             or f.bf16 or hp.updates_per_step or hp.n_step != 1 or hp.double or hp.env == TORCH_PONG):
        raise UsageError("loop 'ptan' is the book's baseline pipeline: it takes no envs, backend, wrappers, "
                         "parallel, replay, pinned, learner, updates_per_step, n_step or double, and no torch_pong")
    if f.loop == "device" and (hp.env != TORCH_PONG or f.parallel):
        raise UsageError(f"loop 'device' steps torch_pong on the device in one process: expected "
                         f"--env {TORCH_PONG} and no parallel, got env {hp.env!r}"
                         + (" with parallel" if f.parallel else ""))
    if f.loop == "device" and f.pinned:  # nothing for it to act on there
        raise UsageError("pinned stages host-to-device copies; loop 'device' makes none (games, replay and "
                         "actions stay on the device): drop pinned")
    if hp.env == TORCH_PONG and (f.backend != "sequential" or f.wrappers != "baseline"):
        raise UsageError(f"env {TORCH_PONG} steps all its games in one tensor call and renders its own "
                         f"frames: backend {f.backend!r} and wrappers {f.wrappers!r} do not apply")
    if f.compile_env and hp.env != TORCH_PONG:
        raise UsageError(f"compile_env compiles torch_pong's step: expected --env {TORCH_PONG}, got {hp.env!r}")
    if f.async_batch and (f.backend != "ale_async" or f.async_batch >= f.envs):
        raise UsageError(f"async_batch {f.async_batch}: expected backend ale_async and fewer than envs ({f.envs})")
    if hp.priority_alpha and (f.replay != "host" or f.cuda_graph or f.loop != "serial"):
        raise UsageError(f"priority_alpha {hp.priority_alpha}: prioritized replay runs on the host replay of the "
                         "serial or parallel loop, without cuda_graph")
    if hp.env.startswith("CarRacing") and (f.backend.startswith("ale") or f.wrappers != "baseline"):
        raise UsageError(f"env {hp.env} has its own preprocessing (envs/carracing.py) on the sequential or "
                         f"gym_async backend: backend {f.backend!r} and wrappers {f.wrappers!r} do not apply")
    if f.backend.startswith("ale") and f.wrappers != "baseline":
        raise UsageError(f"wrappers {f.wrappers!r} with backend {f.backend}: ale-py's vector env "
                         "preprocesses in C++; wrappers apply to sequential and gym_async")
    if f.backend == "ale_async" and f.envs < 2:
        raise UsageError("backend ale_async needs envs >= 2 (it returns a part of them per recv)")
    if hp.env != TORCH_PONG:
        check_env_id(hp.env)
    if (cfg.run.resume or cfg.run.resumable != "no") and (f.loop != "serial" or f.parallel):
        raise UsageError("resumable runs and --resume are the serial loop's: expected loop 'serial' without "
                         f"parallel, got loop {f.loop!r}" + (" with parallel" if f.parallel else ""))
    dev = cfg.run.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise UsageError(f"unknown device {dev!r}: expected auto, cpu, cuda or cuda:N")
    check_flags(f, device)


def check_env_id(env_id: str) -> None:
    """A one-line UsageError, with gymnasium's own suggestion, for an id it does not know."""
    import ale_py  # here: config stays importable without gymnasium and ALE
    import gymnasium as gym
    gym.register_envs(ale_py)  # the Atari ids
    module, _, name = env_id.rpartition(":")  # "module:Id", as gym.make takes it: the module registers Id
    try:
        if module:
            importlib.import_module(module)
        gym.spec(name)
    except ImportError as e:
        raise UsageError(f"env {env_id!r}: module {module!r} cannot be imported ({e})") from None
    except gym.error.Error as e:
        raise UsageError(f"env {env_id!r}: {e}") from None
    if env_id.startswith("CarRacing") and importlib.util.find_spec("Box2D") is None:
        raise UsageError(f"env {env_id} needs gymnasium's box2d extra: pip install 'fastdqn[carracing]'")


def check_flags(flags: Flags, device=None) -> None:
    """Speed flags that cannot run together, and with a torch device, those it cannot run (also
    the Learner's guard when built without a config)."""
    if flags.cuda_graph and flags.compile:
        # a compiled function holds guards and may recompile, which cannot happen inside a
        # captured graph; compile's own graphs come from torch.compile(mode="reduce-overhead")
        raise UsageError("cuda_graph and compile exclude each other: choose one")
    if device is None:
        return
    import torch  # here: config stays importable without loading torch
    device = torch.device(device)
    for flag in ("pinned", "cuda_graph"):
        if getattr(flags, flag) and device.type != "cuda":
            raise UsageError(f"{flag} needs a CUDA device, got {device.type}")
    if flags.bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"bf16 needs a GPU with bfloat16 support, {torch.cuda.get_device_name(device)} has none")
