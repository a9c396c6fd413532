"""One training run: resolve the device, check the outputs, run the chosen loop, write the result
JSON whatever happens (finished, budget, Ctrl-C or SIGTERM, crash)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from .checkpoint import checkpoint_path, save_checkpoint
from .config import TORCH_PONG, validate
from .envs import frames_per_step
from .errors import UsageError, WriteFailed
from .lifecycle import check_writable_dir, describe, stops_at_safe_points, stops_held
from .results import build_result, cpu_isa, git_info, machine_name, native_cpu_bf16, write_json_atomic
from .resume import state_path
from .telemetry import Telemetry


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"device {name!r} asked for, but CUDA is not available on this machine")
        index = int(name[5:]) if name.startswith("cuda:") else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return torch.device(name)


def run_loop(cfg, device, telemetry):
    if cfg.flags.loop == "ptan":  # flag site: loop
        from .loops import ptan_reference as loop
    elif cfg.flags.loop == "device":
        from .loops import device as loop
    elif cfg.flags.parallel:  # flag site: parallel
        from .loops import parallel as loop
    else:
        from .loops import serial as loop
    return loop.run(cfg, device, telemetry)


def resolve_paths(cfg) -> Path:
    """Fill in the run's name, result path and TensorBoard dir (recorded in the result)."""
    run = cfg.run
    run.name = run.name or f"{cfg.preset}-{cfg.hp.seed}"
    out = Path(run.out or f"runs/{run.name}/result.json")
    run.out = str(out)
    run.logdir = run.logdir or str(out.with_suffix("")) + "_tb"
    return out


def check_outputs(cfg) -> Path:
    """Resolve the result path and TensorBoard dir and make sure both can be written, before
    any env is made: a bad location is a usage error now, not a lost run later."""
    out = resolve_paths(cfg)
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a directory: expected the result file's path")
    check_writable_dir(out.parent, "--out folder")
    check_writable_dir(Path(cfg.run.logdir), "--logdir")
    return out


def key_numbers(result: dict) -> str:
    """The run in one line, for when its result file could not be written."""
    fps, mean = result["fps"], result["last_mean100"]
    return (f"{result['status']} ({result['stop_reason']}): {result['steps']} agent steps, "
            f"{result['episodes']} episodes, {result['updates']} updates, "
            f"FPS {'-' if fps is None else f'{fps:.1f}'}, "
            f"last 100-episode mean {'-' if mean is None else f'{mean:.2f}'}, {result['wall_seconds']:.1f} s")


def save(out: Path, result: dict) -> None:
    """Write the result; where that fails, the error says where and carries the key numbers."""
    try:
        write_json_atomic(out, result)
    except OSError as e:  # disk full, folder gone: the numbers go to the terminal instead
        raise WriteFailed(f"could not write the result to {out} ({e.strerror or e}); {key_numbers(result)}") from None
    print(f"result: {out} ({result['stop_reason']})", file=sys.stderr)


def stop_rule(cfg) -> tuple[float, str]:
    """The 100-episode mean that ends the run, and where it came from: the setting where one was
    given, else the env spec's reward_threshold (CartPole-v1: 475), else Pong's 17."""
    hp = cfg.hp
    if "stop_reward" in cfg.explicit:
        return hp.stop_reward, "set"
    if hp.env != TORCH_PONG:
        import gymnasium as gym
        try:
            threshold = gym.spec(hp.env).reward_threshold
        except gym.error.Error:
            threshold = None
        if threshold is not None:
            return float(threshold), f"the reward_threshold of {hp.env}'s gymnasium spec"
    return hp.stop_reward, "the default: 17, Pong's rule (the chapter's)"


def write_checkpoint(out: Path, cfg, telemetry) -> str | None:
    """The online net beside the result (checkpoint.py); None when the loop built none (a run that
    failed before) or the file could not be written (the result is still written, and says so)."""
    if telemetry.net is None:
        return None
    path = checkpoint_path(out)
    try:
        save_checkpoint(path, telemetry.net, cfg.to_dict(), *telemetry.net_spaces, telemetry.steps)
    except OSError as e:
        print(f"fastdqn: could not write the checkpoint {path} ({e.strerror or e})", file=sys.stderr)
        return None
    return str(path)


def write_state(path: Path | None, telemetry) -> str | None:
    """A resumable run's whole state (resume.py); None when it is not resumable, its loop built
    nothing yet, or the file could not be written (said in one line)."""
    if path is None or telemetry.save_loop_state is None:
        return None
    try:
        telemetry.save_loop_state(path)
    except OSError as e:
        print(f"fastdqn: could not write the run state {path} ({e.strerror or e})", file=sys.stderr)
        return None
    return str(path)


def run_recorded(body, telemetry, threads: int, record) -> dict:
    """body() on `threads` torch threads (0: as set), stoppable at its safe points; then, whatever
    happened, record(status, error) with stops held (a second stop request must not cut the
    record short), returning its result. A stop (KeyboardInterrupt) or crash is re-raised after
    the record, as interrupted / failed. train and the peer runs (fastdqn/peers) share it."""
    status, error = "failed", None
    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        with stops_at_safe_points():  # a stop ends the loop between iterations (lifecycle)
            body()
        reason = telemetry.stop_reason
        status = "solved" if reason.startswith("solved") else "budget" if "budget" in reason else "completed"
    except KeyboardInterrupt as e:
        status, telemetry.stop_reason = "interrupted", f"interrupted ({describe(e)})"
        raise
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        telemetry.stop_reason = f"failed: {error}"
        raise
    finally:
        torch.set_num_threads(before)  # train() also runs inside tests and the check gate
        with stops_held():
            result = record(status, error)
    return result


def train(cfg) -> dict:
    """Run and write the result; returns it. A stop (KeyboardInterrupt: Ctrl-C, SIGTERM) and
    crashes still write it (status interrupted / failed) and are re-raised for the caller."""
    device = resolve_device(cfg.run.device)
    validate(cfg, device)
    out = check_outputs(cfg)
    if cfg.flags.bf16 and device.type == "cpu" and not native_cpu_bf16():
        print(f"fastdqn: warning: bf16 on a CPU without native bf16 ({cpu_isa() or 'no AVX2'}, no avx512_bf16 or "
              "amx_bf16): its matmuls are emulated, far slower than fp32; --bf16 false runs fp32", file=sys.stderr)
    if cfg.flags.loop == "ptan":
        from .loops.ptan_reference import make_ptan_env
        make_ptan_env(cfg.hp).close()  # fail on a missing extra or wrong env before any run
    fps_mult = frames_per_step(cfg.hp)
    stop_reward, stop_source = stop_rule(cfg)
    telemetry = Telemetry(stop_reward, fps_mult, cfg.run.max_steps, cfg.run.max_seconds, cfg.run.fps_every,
                          cfg.hp.replay_initial)
    telemetry.rewards.source = stop_source
    state_file = state_path(out) if cfg.run.resumable != "no" else None
    if cfg.run.checkpoint_every:
        def periodic(step: int) -> None:
            write_checkpoint(out.with_name(f"{out.stem}.step{step}.json"), cfg, telemetry)
            write_state(state_file, telemetry)
        telemetry.periodic_checkpoints(cfg.run.checkpoint_every, periodic)
    code = git_info()  # the code that runs: a commit made while it runs is not its code
    telemetry.part_info = {"commit": code.get("commit"), "machine": machine_name()}

    def record(status: str, error: str | None) -> dict:
        telemetry.close()
        result = build_result(cfg, telemetry, status, fps_mult,
                              extra={"device": str(device), "error": error, "git": code})
        if cfg.run.resume:  # its times are the parts' sum: never one run's wall clock
            result["resumed"] = {"from": cfg.run.resume, "parts": telemetry.all_parts()}
        result["checkpoint"] = write_checkpoint(out, cfg, telemetry)
        result["state"] = write_state(state_file, telemetry)
        save(out, result)
        return result

    result = run_recorded(lambda: run_loop(cfg, device, telemetry), telemetry, cfg.run.threads, record)
    if cfg.run.eval_episodes and result["checkpoint"]:  # after the save: a stop here keeps the result
        from .evaluate import evaluate
        played = evaluate(result["checkpoint"], cfg.run.eval_episodes, progress=False)
        result["eval"] = {k: played[k] for k in ("episodes", "epsilon", "mean", "std", "min", "max")}
        result["eval"]["path"] = str(Path(result["checkpoint"]).with_suffix(".eval.json"))
        save(out, result)
    return result
