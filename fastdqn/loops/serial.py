"""fastdqn's serial loop: act, step, store, sample, learn, sync, all in one process.

With the book's settings one iteration is one env step and, after the replay warm-up, one SGD
step of batch 32: the chapter's baseline (and slow_grads with the no_grad flag off). With N envs
one iteration is a round of N steps; the schedule decides how many updates follow it.
"""
from __future__ import annotations

from ignite.engine import Engine

from ..agent import EpsilonGreedy, epsilon_at
from ..envs import make_vec_env
from ..learner import Learner
from ..model import make_net
from ..replay import make_replay, sampler
from ..resume import load_state, restore, save_state
from ..schedule import UpdateSchedule
from ..telemetry import Telemetry
from ..transfer import make_to_device
from .collect import Collector
from .common import learn, run_engine, seed_everything


def run(cfg, device, telemetry: Telemetry) -> None:
    hp, flags = cfg.hp, cfg.flags
    seed_everything(hp.seed)
    env = make_vec_env(hp, flags)
    obs_space, n_actions = env.single_observation_space, int(env.single_action_space.n)
    learner = Learner(make_net(obs_space.shape, n_actions, hp.mlp_hidden, hp.dueling).to(device), hp, flags, device)
    to_device = make_to_device(device, flags.pinned)
    replay = make_replay(hp, flags, obs_space.shape, obs_space.dtype, env.num_envs, device, to_device)
    policy = EpsilonGreedy(learner.net, n_actions, device, flags.no_grad, seed=hp.seed, to_device=to_device)
    rng = sampler(replay, hp.seed + 1)
    schedule = UpdateSchedule(hp, env.batch)
    loop = {"learner": learner, "schedule": schedule, "policy": policy, "rng": rng, "replay": replay}
    resumed_at = 0
    if cfg.run.resume:  # before the collector: its first games start on top of the restored replay
        doc = load_state(cfg.run.resume)
        restore(doc, loop, telemetry)
        resumed_at = doc["agent_steps"]
    collector = Collector(env, policy, replay, telemetry.profile, hp.seed + resumed_at)
    collector.steps = resumed_at
    loop["collector"] = collector
    if cfg.run.resumable != "no":
        telemetry.save_loop_state = lambda path: save_state(path, cfg, loop, telemetry,
                                                            cfg.run.resumable == "with_replay")
    telemetry.samples_per_update = schedule.batch_size
    telemetry.track_net(learner.net, obs_space.shape, obs_space.dtype, n_actions, hp)

    def iteration(engine: Engine, _):
        epsilon = epsilon_at(collector.steps, hp.epsilon_start, hp.epsilon_final, hp.epsilon_steps)
        result = collector.round(epsilon)
        engine.state.steps, engine.state.epsilon = collector.steps, epsilon
        telemetry.episodes_ended(engine, result.episodes)
        return learn(collector.steps, schedule, replay, rng, learner, telemetry.profile, telemetry, to_device)

    try:
        run_engine(iteration, cfg, telemetry)
    finally:
        env.close()
