"""EvoTorch's PGPE on its GymNE problem as a peer cell (evotorch_pgpe): EvoTorch's own
searcher.step(), unchanged, one generation at a time, with the configuration EvoTorch documents
for CartPole-v1; the harness reads each generation's evaluations and stops between generations.

- Episodes: GymNE evaluates each solution of a generation on one whole episode (num_episodes 1,
  no reward shift), so a solution's evaluation is one game's raw score. A generation's episodes
  are recorded in the population's order at the agent step and wall time the generation ended
  (they run side by side on the workers: no order in between), so the stop rule, the budgets
  and the time to solve act at generation ends. GymNE's own episode and interaction counters are
  checked against them every generation.
- Agent steps: GymNE's interaction count (env steps of every worker). Updates: generations (one
  update of the search distribution each); the first ends the warm-up.
- workers > 1: EvoTorch's Ray actors, on a local Ray instance started here under the bench Ray
  launcher's rules (127.0.0.1 only, no dashboard, stopped with the run). workers 1: no Ray.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import signal

from ..errors import RunFailed, UsageError
from ..lifecycle import STOP_SIGNALS

# EvoTorch's CartPole-v1 example, examples/notebooks/Functional_API/problem.ipynb of
# nnaisense/evotorch: GymNE with a 16-unit tanh MLP and observation normalization, PGPE with
# popsize 100, ClipUp max_speed 0.15, center learning rate max_speed * 0.75, radius max_speed * 15,
# stdev learning rate 0.1, stdev_max_change 0.2, centered ranking, symmetric sampling, run for 40
# generations. The notebook calls the functional pgpe; the PGPE class takes the same values. Its
# ClipUp values are also the defaults of EvoTorch's examples/scripts/rl.py (the ClipUp paper's).
MAX_SPEED = 0.15
DOCUMENTED = {
    "CartPole-v1": {
        "network": "Linear(obs_length, 16) >> Tanh() >> Linear(16, act_length)",
        "observation_normalization": True,
        "popsize": 100,
        "center_learning_rate": MAX_SPEED * 0.75,
        "radius_init": MAX_SPEED * 15,
        "stdev_learning_rate": 0.1,
        "stdev_max_change": 0.2,
        "ranking_method": "centered",
        "optimizer": "clipup",
        "optimizer_config": {"max_speed": MAX_SPEED},
        "symmetric": True,
        "num_generations": 40,
    },
}
SOURCE = "nnaisense/evotorch examples/notebooks/Functional_API/problem.ipynb (CartPole-v1 with GymNE and PGPE)"
PROBLEM_KEYS = ("network", "observation_normalization")
SCHEDULE_KEYS = ("num_generations",)
# Ray's multi-node switch, read when ray is imported (bench/launchers.py: RAY_LOOPBACK_ENV): at 0 a
# new local instance takes 127.0.0.1 as its node IP and binds its servers there
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def published(p, cfg) -> tuple[dict, str]:
    """EvoTorch's documented configuration for the env of `cfg` (a fastdqn Config)."""
    env = cfg.hp.env
    if cfg.run.device.startswith("cuda"):
        raise UsageError(f"peer {p.name}: GymNE evaluates its policies on the CPU: expected device cpu or auto, "
                         f"got {cfg.run.device!r}")
    if env not in DOCUMENTED:
        raise UsageError(f"peer {p.name}: no documented configuration for env {env!r} here: expected one of "
                         f"{', '.join(DOCUMENTED)}")
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in DOCUMENTED[env].items()}, SOURCE


def import_library(p):
    os.environ[RAY_LOOPBACK_ENV] = "0"  # before evotorch imports ray
    try:
        import evotorch
        import evotorch.algorithms  # noqa: F401
        import evotorch.neuroevolution  # noqa: F401
    except ImportError as e:
        raise UsageError(f"peer {p.name} needs evotorch ({e}): install the extra, "
                         f"pip install 'fastdqn[{p.extra}]'") from None
    logging.getLogger("evotorch").setLevel(logging.WARNING)  # its INFO lines would bury the progress line
    return evotorch


def device(cfg):
    import torch
    return torch.device("cpu")  # GymNE's policies run on the CPU (published() refuses cuda)


def start_ray(workers: int):
    """A local Ray instance for EvoTorch's actors (it uses one that is running): loopback only,
    no dashboard, `workers` CPUs; SIGINT and SIGTERM stay this process's stop requests."""
    import ray
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    for sig, handler in handlers.items():  # ray.init makes SIGTERM exit at once
        if handler is not None:
            signal.signal(sig, handler)
    ip = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(ip).is_loopback:
        ray.shutdown()
        raise UsageError(f"the local Ray instance took node IP {ip}, not loopback (Ray was imported before "
                         f"{RAY_LOOPBACK_ENV}=0 could apply)")
    return ray


def run(cfg, evotorch, device, meter) -> None:
    from evotorch.algorithms import PGPE
    from evotorch.neuroevolution import GymNE

    from ..loops.common import seed_everything
    settings = dict(cfg.published)
    schedule = {k: settings.pop(k) for k in SCHEDULE_KEYS}
    problem_args = {k: settings.pop(k) for k in PROBLEM_KEYS}
    seed_everything(cfg.hp.seed)  # the searcher samples from torch's generator; GymNE's resets are unseeded
    ray = start_ray(cfg.workers) if cfg.workers > 1 else None
    problem = None
    try:
        problem = GymNE(cfg.hp.env, problem_args["network"], observation_normalization=problem_args[
            "observation_normalization"], num_actors=cfg.workers if cfg.workers > 1 else None)
        searcher = PGPE(problem, **settings)
        meter.record.update({
            "episodes_from": "GymNE's evaluations, one whole episode per solution, raw score; recorded at the "
                             "end of their generation", "updates": "generations (search distribution updates)",
            "phases": "none apart: a generation is GymNE's evaluation (acting, env steps) and the distribution "
                      "update, all in other", "evaluation": "none: judged on its training episodes",
            "workers": cfg.workers,
            "num_generations": schedule["num_generations"]})
        meter.start()
        for generation in range(1, schedule["num_generations"] + 1):
            episodes_before = problem.episode_count
            searcher.step()
            step = problem.interaction_count
            evals = searcher.population.evals[:, 0].tolist()
            if problem.episode_count - episodes_before != len(evals):  # one episode per evaluation, as assumed
                raise RunFailed(f"generation {generation}: GymNE ran {problem.episode_count - episodes_before} "
                                f"episodes for {len(evals)} evaluations")
            for reward in evals:
                meter.episode(reward, step)
            meter.learned(1, step)
            meter.record.update(library_steps=step, library_episodes=problem.episode_count, generations=generation)
            if meter.advance(step):
                break
        meter.stop()
    finally:
        if problem is not None and problem.actors:
            problem.kill_actors()
        if ray is not None:
            ray.shutdown()
