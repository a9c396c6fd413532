"""fastdqn's parallel loop (the chapter's "parallel" step): play processes act and step their envs,
the trainer process stores and learns.

    player p (x M, spawned)                         trainer (this process, an ignite Engine)
    act (own CPU copy of the net), step envs  --chunks of numpy arrays, bounded queue-->
                                                    insert into one FrameReplay, SGD steps,
    load weights when the version changes     <--shared-memory state_dict + version--  publish

Design, in the order the code meets it:
- Player p owns `make_vec_env(hp, flags)` seeded hp.seed + 1000 p (player 0 uses the serial
  loop's seeds) and global env ids p*envs .. (p+1)*envs - 1 in one FrameReplay of M*envs streams.
- Players act on the CPU whatever the trainer's device: M CUDA contexts would cost more memory
  than a batched forward pass of `envs` observations costs time on a core. One torch thread each.
- Epsilon: from the player's own agent steps x M. For M=1 that is exactly the serial loop's
  schedule; for M>1 players step at about the same rate, so it tracks the global count without
  waiting on the trainer (a trainer-updated counter would lag by the chunks in the queue).
- Transfers: CHUNK_STEPS agent steps per message, as arrays holding only the newest frame per
  row (FrameReplay stores no more), in the exact order of the serial loop's add/start calls, so the
  replay is what the serial loop would have stored. The queue holds QUEUE_CHUNKS messages per
  player: a stalled trainer blocks the players, memory stays bounded.
- Replay ratio: the serial loop's hp.batch_size samples per agent step after the warm-up, in SGD
  steps of batch hp.batch_size x envs; a chunk's worth of them after each chunk.
- Weights: every flags.weight_sync_steps agent steps the trainer copies its net into a CPU
  state_dict in shared memory and bumps a version; players load it before their next action when
  it changed (checked once per chunk). Their policy is that many steps stale at most, plus the
  chunks in flight.
- Failure: any process that dies or stalls ends the run. The trainer checks the players' exit
  codes and heartbeats while it waits for chunks and raises ProcessFailed naming the player; a
  heartbeat is a shared counter each player bumps every round and every blocked put, so a full
  queue (a trainer busy compiling) is not a stall, a stopped or stuck player is. Players exit as
  soon as the trainer is gone (a watchdog thread on the parent's sentinel); they ignore SIGINT and
  SIGTERM (a supervisor may signal the whole process group) and are stopped by the trainer through
  an Event; `finally` leaves no process behind.
"""
from __future__ import annotations

import dataclasses
import os
import queue as queue_lib
import signal
import threading
import time
import traceback

import numpy as np
import torch
import torch.multiprocessing as mp
from ignite.engine import Engine

from ..agent import EpsilonGreedy, epsilon_at
from ..envs import make_vec_env
from ..errors import ProcessFailed
from ..learner import Learner
from ..lifecycle import stop_point
from ..model import make_net
from ..profile import PhaseTimer
from ..replay import make_replay, newest_frames, sampler
from ..schedule import UpdateSchedule
from ..telemetry import Telemetry
from ..transfer import make_to_device
from .collect import Collector
from .common import learn, run_engine, seed_everything

CHUNK_STEPS = 64     # agent steps per message: 64 Pong frames are 450 KB, one pickle, not 64
QUEUE_CHUNKS = 4     # messages in flight per player before players block
POLL_S = 0.2         # how often blocked waits look at stop requests and exit codes
STOP_GRACE_S = 3.0   # players get this long to stop on request before they are killed
START_GRACE_S = 120.0  # a player's first heartbeat may take this long (or stall_seconds if longer): it
# imports torch and builds its envs and net first, tens of seconds on a busy small machine
ADD, START = 0, 1     # the kinds of call a chunk carries
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # the trainer's to handle: it stops the players
PLAYER_DEVICE = torch.device("cpu")


# --- the chunk protocol: player side builds, trainer side applies -----------------------------

class ChunkBuilder:
    """A player's TransitionSink (replay.py): buffers its start/add calls as arrays, in order, with
    global env ids (offset), for apply_chunk to make the same calls on the trainer's replay."""

    def __init__(self, obs_shape, offset: int = 0):
        self.obs_shape, self.offset = tuple(obs_shape), offset
        self.calls, self.adds, self.starts, self.episodes = [], [], [], []
        self.steps = 0  # agent steps buffered

    def start(self, envs, obs, frames: bool = False) -> None:
        self.calls.append((START, len(envs)))
        self.starts.append((np.asarray(envs) + self.offset, obs if frames else newest_frames(obs, self.obs_shape)))

    def start_where(self, mask, obs) -> None:
        self.start(np.flatnonzero(mask), obs[mask])

    def add(self, actions, rewards, terminated, next_obs, env_ids, frames: bool = False) -> None:
        self.calls.append((ADD, len(env_ids)))
        self.adds.append((np.asarray(env_ids) + self.offset, actions, rewards, terminated,
                          next_obs if frames else newest_frames(next_obs, self.obs_shape)))
        self.steps += len(env_ids)

    def ended(self, episodes) -> None:
        self.episodes += [(e + self.offset, ret, length) for e, ret, length in episodes]

    def take(self, player_steps: int) -> dict:
        """The buffered calls as one message; the builder starts empty again."""
        cat = lambda parts, i: np.concatenate([p[i] for p in parts]) if parts else np.zeros(0)
        chunk = {"calls": np.array(self.calls, np.int64).reshape(-1, 2),
                 "env": cat(self.adds, 0), "action": cat(self.adds, 1), "reward": cat(self.adds, 2),
                 "terminated": cat(self.adds, 3), "next_frame": cat(self.adds, 4),
                 "reset_env": cat(self.starts, 0), "reset_frame": cat(self.starts, 1),
                 "episodes": self.episodes, "steps": self.steps, "player_steps": player_steps}
        self.calls, self.adds, self.starts, self.episodes, self.steps = [], [], [], [], 0
        return chunk


def apply_chunk(replay, chunk: dict) -> None:
    """Make a chunk's calls on the replay, in the order the player made them."""
    t = r = 0
    for kind, n in chunk["calls"]:
        if kind == ADD:
            s = slice(t, t + n)
            replay.add(chunk["action"][s], chunk["reward"][s], chunk["terminated"][s],
                       chunk["next_frame"][s], chunk["env"][s], frames=True)
            t += n
        else:
            replay.start(chunk["reset_env"][r:r + n], chunk["reset_frame"][r:r + n], frames=True)
            r += n


# --- player process --------------------------------------------------------------------------

def _exit_with_trainer() -> None:
    """Watchdog thread: wherever the player blocks (env step, full queue, flushing the queue at
    exit), it ends when the trainer is gone; otherwise it would wait on that queue forever."""
    mp.parent_process().join()  # returns when the parent's sentinel closes: it exited or was killed
    os._exit(1)


def _put(q, item, give_up, beat=lambda: None) -> bool:
    """Blocking put on the bounded queue that still notices give_up() and beats every POLL_S."""
    while True:
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue_lib.Full:
            beat()  # waiting on a busy trainer is not a stall
            if give_up():
                return False


def _play(p: int, cfg, spaces: tuple, shared: dict, version, stop, q, num_players: int, beats) -> None:
    for sig in STOP_SIGNALS:  # Ctrl-C and SIGTERM are the trainer's, which stops us
        signal.signal(sig, signal.SIG_IGN)

    def beat():  # a sign of life for the trainer's stall check (Players._check_stalls)
        beats[p] += 1
    threading.Thread(target=_exit_with_trainer, daemon=True).start()
    hp, flags = cfg.hp, cfg.flags
    profile, env = PhaseTimer(), None
    try:
        torch.set_num_threads(1)  # the cores belong to the envs, the other players and the trainer
        seed = hp.seed + 1000 * p
        seed_everything(seed)
        env = make_vec_env(hp, flags)
        obs_shape, n_actions = env.single_observation_space.shape, int(env.single_action_space.n)
        if (obs_shape, n_actions) != spaces:  # the trainer sized its replay and net from one make_env
            raise ValueError(f"vector env spaces {(obs_shape, n_actions)} differ from make_env's {spaces}")
        net = make_net(obs_shape, n_actions, hp.mlp_hidden, hp.dueling).to(PLAYER_DEVICE)
        policy = EpsilonGreedy(net, n_actions, PLAYER_DEVICE, flags.no_grad, seed=seed)
        chunk = ChunkBuilder(obs_shape, offset=p * flags.envs)
        collector = Collector(env, policy, chunk, profile, seed)
        seen, start = -1, time.perf_counter()
        while not stop.is_set():
            beat()
            if version.value != seen:  # the trainer published new weights
                with version.get_lock():
                    net.load_state_dict(shared)
                    seen = version.value
            epsilon = epsilon_at(collector.steps * num_players, hp.epsilon_start, hp.epsilon_final,
                                 hp.epsilon_steps)
            chunk.ended(collector.round(epsilon).episodes)
            if chunk.steps >= CHUNK_STEPS:
                with profile("queue_wait"):
                    _put(q, ("chunk", p, chunk.take(collector.steps)), stop.is_set, beat)
        deadline = time.monotonic() + 1.0  # the trainer drains the queue while it waits for us
        _put(q, ("profile", p, {"player": p, "steps": collector.steps, **profile.report(time.perf_counter() - start)}),
             lambda: time.monotonic() > deadline)
    except Exception as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        deadline = time.monotonic() + 2.0
        _put(q, ("error", p, f"player {p} failed: {type(e).__name__}: {e} "
                             f"({os.path.basename(where.filename)}:{where.lineno})"),
             lambda: time.monotonic() > deadline)
        raise SystemExit(1)  # exit code 1 also names us if the message is lost
    finally:
        if env is not None:
            env.close()


# --- trainer side ----------------------------------------------------------------------------

class Players:
    """The M play processes and the trainer's end of their queue.

    A thread receives from the queue: a player killed in the middle of writing a message leaves
    half of it in the pipe, and a read of it would block for good. The trainer itself only waits
    on the thread, with a timeout, so it always gets to check the players' exit codes."""

    def __init__(self, ctx, cfg, spaces: tuple, shared: dict, version):
        self.stop = ctx.Event()
        self.queue = ctx.Queue(maxsize=QUEUE_CHUNKS * cfg.flags.players)
        self.inbox = queue_lib.Queue(maxsize=1)
        self.beats = ctx.Array("Q", cfg.flags.players, lock=False)  # each player's heartbeat counter
        self.procs = [ctx.Process(target=_play, name=f"fastdqn-player-{p}",  # not daemonic: may own env processes
                                  args=(p, cfg, spaces, shared, version, self.stop, self.queue, cfg.flags.players,
                                        self.beats))
                      for p in range(cfg.flags.players)]  # flag site: players
        self.stall_s = cfg.run.stall_seconds
        self._heard: list[tuple[int, float, float]] = []  # per player: beat, when it changed, allowed silence
        self.profiles: list[dict] = []
        self._closed = threading.Event()

    def start(self) -> None:
        # SIGINT and SIGTERM are blocked while the players start: they are born with them blocked
        # (the mask survives exec), so a stop signal while they import is not theirs, and they
        # ignore it from their first line on; ours stays pending and arrives as soon as the mask
        # is restored. (Ignoring it here instead would lose a stop that lands during the start.)
        self._heard = [(0, time.monotonic(), max(self.stall_s, START_GRACE_S))] * len(self.procs)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for proc in self.procs:
                proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                item = self.queue.get(timeout=POLL_S)
            except queue_lib.Empty:
                continue
            while not self._closed.is_set():
                try:
                    self.inbox.put(item, timeout=POLL_S)
                    break
                except queue_lib.Full:
                    pass

    def next_chunk(self) -> dict:
        """The next chunk of any player; raises ProcessFailed when a player died, raised or stalled."""
        while True:
            stop_point()
            self._check()
            self._check_stalls()
            try:
                kind, p, payload = self.inbox.get(timeout=POLL_S)
            except queue_lib.Empty:
                continue
            if kind == "error":
                raise ProcessFailed(payload)
            if kind == "chunk":
                return payload

    def _check(self) -> None:
        dead = [(p, proc.exitcode) for p, proc in enumerate(self.procs) if proc.exitcode is not None]
        if not dead:
            return
        end = time.monotonic() + 1.0  # a player that raised sent its error just before exiting
        while time.monotonic() < end:
            try:
                kind, _, payload = self.inbox.get(timeout=POLL_S)
            except queue_lib.Empty:
                continue
            if kind == "error":
                raise ProcessFailed(payload)
        p, code = dead[0]
        raise ProcessFailed(f"player {p} died (exit code {code})")

    def _check_stalls(self) -> None:
        now = time.monotonic()
        for p, (beat, since, allowed) in enumerate(self._heard):
            if self.beats[p] != beat:
                self._heard[p] = (self.beats[p], now, self.stall_s)
            elif now - since > allowed:
                self.procs[p].kill()  # it would not answer a stop request
                raise ProcessFailed(f"player {p} (pid {self.procs[p].pid}) stalled: no sign of life for "
                                    f"{now - since:.0f} s (stall_seconds {self.stall_s:g})")

    def close(self) -> None:
        """Stop every player: ask, wait STOP_GRACE_S while draining the queue (their last
        messages, the phase profiles, must get through), then kill (they ignore SIGTERM)."""
        self.stop.set()
        deadline = time.monotonic() + STOP_GRACE_S
        while any(proc.is_alive() for proc in self.procs) and time.monotonic() < deadline:
            self._drain(POLL_S)
        self._drain(POLL_S)  # what the receiving thread still hands over
        self._closed.set()
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()  # also ends a stopped (SIGSTOP) player
            if proc.pid is not None:
                proc.join()

    def _drain(self, timeout: float) -> None:
        try:
            while True:
                kind, _, payload = self.inbox.get(timeout=timeout)
                if kind == "profile":
                    self.profiles.append(payload)
        except queue_lib.Empty:
            pass


def _spaces(hp, flags):
    """Observation shape/dtype and action count, from one env (the players own the real ones)."""
    env = make_vec_env(hp, dataclasses.replace(flags, envs=1, backend="sequential", async_batch=0))
    try:
        space = env.single_observation_space
        return space.shape, space.dtype, int(env.single_action_space.n)
    finally:
        env.close()


def run(cfg, device: torch.device, telemetry: Telemetry) -> None:
    hp, flags = cfg.hp, cfg.flags
    seed_everything(hp.seed)
    obs_shape, obs_dtype, n_actions = _spaces(hp, flags)
    learner = Learner(make_net(obs_shape, n_actions, hp.mlp_hidden, hp.dueling).to(device), hp, flags, device)
    net = learner.net
    to_device = make_to_device(device, flags.pinned)
    replay = make_replay(hp, flags, obs_shape, obs_dtype, flags.players * flags.envs, device, to_device)
    rng = sampler(replay, hp.seed + 1)
    schedule = UpdateSchedule(hp, flags.envs)  # as if each player's round were the serial loop's
    telemetry.samples_per_update = schedule.batch_size
    telemetry.track_net(net, obs_shape, obs_dtype, n_actions, hp)
    profile = telemetry.profile

    ctx = mp.get_context("spawn")  # CUDA-safe; the players import fastdqn afresh
    shared = {k: v.detach().to("cpu", copy=True).share_memory_() for k, v in net.state_dict().items()}
    version = ctx.Value("q", 0)  # its lock also guards `shared` against torn reads
    players = Players(ctx, cfg, (obs_shape, n_actions), shared, version)
    last_publish = 0
    failed: list[ProcessFailed] = []

    def publish_weights() -> None:
        with version.get_lock():
            for k, v in net.state_dict().items():
                shared[k].copy_(v)
            version.value += 1

    def iteration(engine: Engine, _):
        nonlocal last_publish
        with profile("queue_wait"):
            try:
                chunk = players.next_chunk()
            except ProcessFailed as e:  # raised after engine.run: ignite would log it twice more
                failed.append(e)
                engine.terminate()
                return None
        with profile("replay_insert"):
            apply_chunk(replay, chunk)
        engine.state.steps = steps = engine.state.steps + chunk["steps"]
        engine.state.epsilon = epsilon_at(chunk["player_steps"] * flags.players, hp.epsilon_start,
                                          hp.epsilon_final, hp.epsilon_steps)
        telemetry.episodes_ended(engine, chunk["episodes"])
        loss = learn(steps, schedule, replay, rng, learner, profile, telemetry, to_device)
        if steps - last_publish >= flags.weight_sync_steps:  # flag site: weight_sync_steps
            with profile("copy"):
                publish_weights()
            last_publish = steps
        return loss

    # the players' cores are not the trainer's: oversubscribed intra-op threads spin and stall
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - flags.players)))
    try:
        players.start()
        run_engine(iteration, cfg, telemetry)
    finally:
        players.close()
        torch.set_num_threads(threads)
        telemetry.player_profiles = sorted(players.profiles, key=lambda r: r["player"])
    if failed:
        raise failed[0]
