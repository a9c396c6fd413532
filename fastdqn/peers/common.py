"""What every peer run shares: the harness's measurements fed by the adapter (PeerMeter) and the
run's edges (run_peer: outputs checked first, Ctrl-C and SIGTERM, the result written whatever
happens), both as fastdqn's train does them, with its Telemetry, stop rule and result schema."""
from __future__ import annotations

from ..envs import frames_per_step
from ..lifecycle import stop_point
from ..progress import RunProgress
from ..results import build_result, git_info, machine_name
from ..telemetry import Telemetry
from ..train import check_outputs, run_recorded, save, stop_rule
from . import PEERS, PeerConfig, adapter

FPS_DEFINITION = "agent steps per wall-clock second after the warm-up (from the peer's first update on)"


class PeerMeter:
    """The harness's view of a peer run. The adapter calls start() as its library's training
    begins, episode() for each whole game that ends (raw score), learned() for each update,
    advance() after each step it can be stopped at: True there means a stop rule (solved, a
    budget) ends the run, and the clock stops. A stop request (Ctrl-C, SIGTERM) is raised in
    advance(). stop() stops the clock where the library ends on its own, before its clean-up
    (Ray's shutdown takes seconds) would count as training time."""

    def __init__(self, cfg: PeerConfig):
        bound, source = stop_rule(cfg)
        self.telemetry = Telemetry(bound, frames_per_step(cfg.hp), cfg.run.max_steps, cfg.run.max_seconds,
                                   cfg.run.fps_every)
        self.telemetry.rewards.source = source
        if cfg.run.progress:  # the line bench shows (its log, read by bench/jobs.last_progress_line)
            self.telemetry.progress = RunProgress(self.telemetry, 0, log_every=cfg.run.progress_every)
        self.tb = None
        if cfg.run.logdir:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(cfg.run.logdir)  # fastdqn's tags, so report --from-tensorboard reads it
        self.record: dict = {}  # the adapter's notes for the result's `peer` block

    def set_warmup(self, steps: int) -> None:
        """The agent steps before the first update, as the progress line shows them."""
        self.telemetry.replay_initial = steps
        if self.telemetry.progress is not None:
            self.telemetry.progress.replay_initial = steps

    def start(self) -> None:
        """The clock starts here, as fastdqn's starts with its loop: envs and nets are built."""
        self.telemetry.timer.reset()
        self.telemetry.stop_reason = "running"

    def episode(self, reward: float, step: int) -> None:
        t = self.telemetry
        wall, n = t.now(), len(t.curve) + 1
        t.curve.append([n, int(step), round(wall, 3), float(reward)])
        t.rewards.add(float(reward), int(step), wall, n)
        if self.tb is not None:
            self.tb.add_scalar("episodes/reward", float(reward), step)
            self.tb.add_scalar("episodes/avg_reward", t.rewards.mean100, step)

    def learned(self, updates: int, step: int) -> None:
        """`updates` gradient (or distribution) updates ran, the agent at `step`: the first ends
        the warm-up (FPS counts from here, as fastdqn's from its first update)."""
        t = self.telemetry
        t.updates += updates
        if t.learn_start is None:
            t.learn_start = (int(step), t.now())

    def advance(self, step: int, epsilon: float | None = None) -> bool:
        t = self.telemetry
        t.steps, t.epsilon = int(step), epsilon
        if t.fps_sample_due(t.steps):
            t.record_fps_sample(t.steps)
            if self.tb is not None and t.fps() is not None:
                self.tb.add_scalar("train/avg_fps", t.fps(), t.steps)
        if t.progress is not None:
            t.progress.update()
        stop_point()
        reason = t.solved_reason() if t.rewards.solved_mean100 is not None else t.budget_spent()
        if reason is None:
            return False
        t.stop_reason = reason
        self.stop()
        return True

    def stop(self) -> None:
        self.telemetry.timer.pause()

    def close(self) -> None:
        self.telemetry.close()  # the final progress line
        if self.tb is not None:
            self.tb.close()


def run_peer(cfg: PeerConfig) -> dict:
    """Run the peer and write its result; returns it. As fastdqn's train: a stop (Ctrl-C,
    SIGTERM) and crashes still write it (interrupted / failed) and are re-raised."""
    p = PEERS[cfg.peer]
    module = adapter(p)
    library = module.import_library(p)  # a missing extra: one line, before any output
    device = module.device(cfg)
    machine_name()  # a bad $FASTDQN_MACHINE or machine file fails here, before the run
    out = check_outputs(cfg)
    meter = PeerMeter(cfg)
    t = meter.telemetry
    code = git_info()  # the code that runs: a commit made while it runs is not its code

    def body() -> None:
        module.run(cfg, library, device, meter)
        if t.stop_reason == "running":  # the library's own schedule ran out
            t.stop_reason = f"completed: {p.distribution}'s own training schedule ended at {t.steps} agent steps"

    def record(status: str, error: str | None) -> dict:
        meter.close()
        result = build_result(cfg, t, status, frames_per_step(cfg.hp),
                              extra={"device": str(device), "error": error, "git": code,
                                     "fps_definition": FPS_DEFINITION, "checkpoint": None,
                                     "peer": {**cfg.to_dict()["peer"], **meter.record}})
        save(out, result)
        return result

    return run_recorded(body, t, cfg.run.threads, record)
