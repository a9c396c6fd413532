"""Run telemetry on ignite: episodes and stop rules, FPS, TensorBoard scalars, the progress line.

The loops own the hot path and set three things on the engine's state each iteration:
``state.steps`` (agent steps taken so far), ``state.epsilon`` and ``state.output`` (the loss, or
None while the replay warms up; a device tensor, read only when it is logged), and report ended
episodes through ``Telemetry.episodes_ended``.

FPS, one definition everywhere: agent steps taken during the training phase (after the replay
warm-up, when every step feeds the learner) divided by the wall-clock seconds of that phase.
Emulator frames per second = FPS x frames per agent step (4 for Atari with frame skip 4).
"""
from __future__ import annotations

import math
from collections import deque

from ignite.engine import Engine, EventEnum, Events
from ignite.handlers import Timer
from ignite.handlers.tensorboard_logger import OutputHandler, TensorboardLogger

from .errors import RunFailed
from .profile import PhaseTimer
from .progress import RunProgress

EMA_ALPHA = 0.98   # the book's smoothing of the episode reward (and here of the loss)
MEAN_WINDOW = 100  # the headline stop rule: mean of the last 100 completed episodes


class EpisodeEvents(EventEnum):
    EPISODE_COMPLETED = "episode_completed"
    BOUND_REWARD_REACHED = "bound_reward_reached"
    TRAIN_SAMPLED = "train_sampled"  # FPS and train scalars sampled: the TensorBoard train/* write


class RewardTracker:
    """Both stop rules of the chapter: the 100-episode mean (headline; needs 100 episodes) and
    the book code's EMA(0.98), seeded with the first episode's reward."""

    def __init__(self, bound: float):
        self.bound = bound
        self.source = "set"  # where the bound came from (train.stop_rule), recorded in the result
        self.window: deque[float] = deque(maxlen=MEAN_WINDOW)
        self.ema: float | None = None
        self.best_mean: float | None = None  # the best mean100 so far (over fewer while fewer ended)
        self.solved_mean100: dict | None = None
        self.solved_ema: dict | None = None

    @property
    def mean100(self) -> float | None:
        return sum(self.window) / len(self.window) if self.window else None

    def add(self, reward: float, step: int, wall: float, episode: int) -> None:
        self.window.append(reward)
        self.ema = reward if self.ema is None else self.ema * EMA_ALPHA + reward * (1 - EMA_ALPHA)
        self.best_mean = self.mean100 if self.best_mean is None else max(self.best_mean, self.mean100)
        at = {"seconds": wall, "steps": step, "episodes": episode}
        if self.solved_mean100 is None and len(self.window) == MEAN_WINDOW and self.mean100 >= self.bound:
            self.solved_mean100 = at
        if self.solved_ema is None and self.ema >= self.bound:
            self.solved_ema = at


class Telemetry:
    def __init__(self, stop_reward: float, frames_per_step: int, max_steps: int = 0,
                 max_seconds: float = 0.0, fps_every: int = 1000, replay_initial: int = 0):
        self.rewards = RewardTracker(stop_reward)
        self.frames_per_step = frames_per_step
        self.max_steps = max_steps
        self.max_seconds = max_seconds
        self.fps_every = fps_every
        self.timer = Timer()  # wall clock of the loop, started with the engine
        self.clock_offset = 0.0  # a resumed run's earlier seconds (resume.py): now() counts both parts
        self.curve: list[list] = []  # [episode, step, wall seconds, reward]
        self.fps_series: list[list] = []  # [step, wall seconds, FPS over the window]
        self.learn_start: tuple[int, float] | None = None  # (step, wall) of the first update
        self.avg_loss = None  # EMA of the loss, as the loop returns it (a float or a device tensor)
        self.steps = 0
        self.epsilon: float | None = None
        self.replay_initial = replay_initial
        self.progress: RunProgress | None = None
        self.updates = 0
        self.samples_per_update = 0  # set by the loop: the SGD batch size
        self.flops = None  # compute.FlopCount of the loop's net and loss (track_net)
        self.net = None    # the loop's online net, checkpointed when the run ends (track_net)
        self.net_spaces: tuple | None = None  # (observation shape, action count) it was built for
        self.checkpoint_every, self.write_checkpoint = 0, None  # periodic_checkpoints
        self.save_loop_state = None  # the serial loop's resume.save_state(path), for a resumable run
        self.parts: list[dict] = []  # a resumed run's earlier parts (resume.py)
        self.part_start = (0, 0.0)   # (agent steps, seconds) where this part began
        self.part_info: dict = {}    # this part's commit and machine, set by train
        self._checkpointed_at: int | None = None  # step of the last periodic checkpoint (None: part_start)
        self.profile = PhaseTimer()  # the loop's (trainer's) phases
        self.player_profiles: list[dict] = []  # parallel loop: each player's PhaseTimer.report
        self.stop_reason = "not started"
        self._last_sample: tuple | None = None  # (step, seconds) of the last FPS sample (None: part_start)
        self.tb: TensorboardLogger | None = None
        self._train_scalars: dict[str, float] = {}

    def periodic_checkpoints(self, every: int, write) -> None:
        """write(step) once the loop's net exists and at every multiple of `every` agent steps."""
        self.checkpoint_every, self.write_checkpoint = every, write

    # --- called by the loops -------------------------------------------------------------
    def track_net(self, net, obs_shape, obs_dtype, n_actions: int, hp) -> None:
        """The loop's online net: its FLOPs counted now, its weights checkpointed at the end."""
        from .compute import count_flops
        self.flops = count_flops(net, obs_shape, obs_dtype, hp)
        self.net, self.net_spaces = net, (tuple(obs_shape), int(n_actions))

    def episodes_ended(self, engine: Engine, episodes) -> None:
        for _, reward, length in episodes:
            wall = self.now()
            n = len(self.curve) + 1
            self.curve.append([n, engine.state.steps, round(wall, 3), reward])
            self.rewards.add(reward, engine.state.steps, wall, n)
            engine.state.metrics.update(reward=reward, steps=length, avg_reward=self.rewards.mean100)
            engine.fire_event(EpisodeEvents.EPISODE_COMPLETED)
        if self.rewards.solved_mean100 is not None and episodes:
            engine.fire_event(EpisodeEvents.BOUND_REWARD_REACHED)

    # --- derived numbers -----------------------------------------------------------------
    def all_parts(self) -> list[dict]:
        """Every part of the run so far, this one last: agent steps from-to, seconds, where."""
        step0, seconds0 = self.part_start
        return self.parts + [{"steps": [step0, self.steps], "seconds": round(self.now() - seconds0, 3),
                              **self.part_info}]

    def now(self) -> float:
        """Seconds of the run: this process's loop time, plus a resumed run's earlier parts."""
        return self.clock_offset + self.timer.value()

    def fps(self) -> float | None:
        """The FPS definition (module docstring). None before the first update."""
        if self.learn_start is None:
            return None
        step0, wall0 = self.learn_start
        dt = self.now() - wall0
        return (self.steps - step0) / dt if dt > 0 else None

    def replay_ratio(self) -> float | None:
        """Samples trained per agent step after the warm-up."""
        if self.learn_start is None or self.steps <= self.learn_start[0]:
            return None
        return self.updates * self.samples_per_update / (self.steps - self.learn_start[0])

    def fps_total(self) -> float | None:
        dt = self.now()
        return self.steps / dt if dt > 0 else None

    # --- ignite wiring -------------------------------------------------------------------
    def attach(self, engine: Engine, logdir: str | None, progress: float) -> None:
        """progress: 0 for none, else the seconds between progress lines in a log file."""
        # event_to_attr: ignite counts the events in state.episode (loggers require a counter)
        engine.register_events(*EpisodeEvents, event_to_attr={
            EpisodeEvents.EPISODE_COMPLETED: "episode", EpisodeEvents.BOUND_REWARD_REACHED: "bound_reached",
            EpisodeEvents.TRAIN_SAMPLED: "train_samples"})
        self.timer.attach(engine, start=Events.STARTED)
        engine.add_event_handler(Events.STARTED, self._on_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration)
        engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=self._sample_due), self._sample_fps)

        @engine.on(EpisodeEvents.BOUND_REWARD_REACHED)
        def _solved(engine):
            self.stop_reason = self.solved_reason()
            engine.terminate()

        if logdir:
            self.tb = TensorboardLogger(log_dir=logdir)
            by_steps = lambda engine, _event: engine.state.steps  # x axis: agent steps
            self.tb.attach(engine, OutputHandler(tag="episodes", metric_names=["reward", "steps", "avg_reward"],
                                                 global_step_transform=by_steps),
                           event_name=EpisodeEvents.EPISODE_COMPLETED)
            self.tb.attach(engine, OutputHandler(tag="train", output_transform=lambda _: self._train_scalars,
                                                 global_step_transform=by_steps),
                           event_name=EpisodeEvents.TRAIN_SAMPLED)  # its own event: a second
            # filtered ITERATION_COMPLETED would see the sample already taken and never fire
        if progress:
            # not ignite's ProgressBar: it counts iterations (a round of N envs is one), not agent
            # steps, and draws carriage returns into log files
            self.progress = RunProgress(self, self.replay_initial, log_every=progress)

    def _on_started(self, engine: Engine) -> None:
        self.stop_reason = "running"
        engine.state.steps = 0
        engine.state.epsilon = 1.0

    def _on_iteration(self, engine: Engine) -> None:
        self.steps, self.epsilon = engine.state.steps, engine.state.epsilon
        # loops add their updates to self.updates and return a loss on iterations that learned
        loss = engine.state.output
        if loss is not None:
            self.learn_start = self.learn_start or (self.steps, self.now())
            # kept as the loop returns it: a device tensor is read (a host sync) only when logged
            self.avg_loss = loss if self.avg_loss is None else self.avg_loss * EMA_ALPHA + loss * (1 - EMA_ALPHA)
        every = self.checkpoint_every
        last = self.part_start[0] if self._checkpointed_at is None else self._checkpointed_at
        if every and self.steps // every > last // every and self.net is not None:  # a multiple passed
            self._checkpointed_at = self.steps
            self.write_checkpoint(self.steps)
        spent = self.budget_spent()
        if spent and self.rewards.solved_mean100 is None:  # solved on its last step: solved
            self.stop_reason = spent
            engine.terminate()
        if self.progress is not None:
            self.progress.update()

    def _last_fps_sample(self) -> tuple:
        return self.part_start if self._last_sample is None else self._last_sample

    def fps_sample_due(self, step: int) -> bool:
        return step - self._last_fps_sample()[0] >= self.fps_every

    def record_fps_sample(self, step: int) -> float:
        """The FPS of the window since the last sample into fps_series; returns the wall time."""
        wall = self.now()
        last_step, last_wall = self._last_fps_sample()
        window = (step - last_step) / max(wall - last_wall, 1e-9)
        self._last_sample = (step, wall)
        self.fps_series.append([step, round(wall, 3), round(window, 2)])
        return wall

    def _sample_due(self, engine: Engine, _event) -> bool:
        return self.fps_sample_due(engine.state.steps)

    def _sample_fps(self, engine: Engine) -> None:
        step = engine.state.steps
        wall = self.record_fps_sample(step)
        # only what exists yet: no loss or FPS during the warm-up
        number = lambda v: None if v is None else float(v)
        avg_loss = number(self.avg_loss)  # read here anyway: checking it costs CUDA no extra sync
        if avg_loss is not None and not math.isfinite(avg_loss):  # the EMA keeps any nan or inf for good
            raise RunFailed(f"the loss's running average is {avg_loss} at agent step {step:,}: the network "
                            "diverged (a smaller lr, or the huber loss, may hold it)")
        scalars = {"epsilon": engine.state.epsilon, "loss": number(engine.state.output),
                   "avg_loss": avg_loss, "avg_fps": self.fps()}
        scalars.update({f"profile_{p}": v for p, v in self.profile.shares(wall).items()})
        self._train_scalars = {k: v for k, v in scalars.items() if v is not None}
        engine.fire_event(EpisodeEvents.TRAIN_SAMPLED)

    def solved_reason(self) -> str:
        return f"solved: mean of the last {MEAN_WINDOW} episodes >= {self.rewards.bound}"

    def budget_spent(self) -> str | None:
        """The stop reason of a budget spent at the current step and wall time; None: none is.
        Not ignite's TimeLimit: it takes whole seconds only and runs its own clock from its
        construction, so its budget would not be the wall time this run reports."""
        if self.max_steps and self.steps >= self.max_steps:
            return f"step budget: {self.max_steps} agent steps"
        if self.max_seconds and self.now() >= self.max_seconds:
            return f"time budget: {self.max_seconds} s"
        return None

    def close(self) -> None:
        if self.progress is not None:  # the final line, once; the stop reason says how it ended
            reason = self.stop_reason
            self.progress.close(next((s for s in ("solved", "interrupted", "failed", "budget") if s in reason),
                                     "stopped"))
            self.progress = None
        if self.tb is not None:
            self.tb.close()
