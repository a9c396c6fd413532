"""THE learning test: the training loop that runs Pong (fastdqn's serial loop, MLP head here)
takes CartPole-v1 to a 100-episode mean reward >= 150 within 60,000 agent steps on the CPU."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

BUDGET = 60_000
BOUND = 150.0

# CartPole hyperparameters (the Pong ones are far too slow for a 60k-step budget), found by a small
# search at 1 SGD update per agent step, on seeds 123 and 1-9 (agent steps to solve; "miss" = not
# solved in 60k, the 100-episode mean stuck near 90-125):
# - huber, lr 1e-3, gamma 0.99, target sync 500, 128 hidden: 21k-53k on seeds 1-5, 7; 123 miss.
#   mse or lr 5e-4 (sync 1000) were no better.
# - target sync 2000 and 256 hidden: 23k-27k on 123, 1-4, 6, 7; 5 miss (peaked at 141, then sank).
#   Sync 3000 or 4000, batch 128 or a 20k-step epsilon decay each missed on some seed.
# - gamma 0.98 on top (Q targets at most 50 instead of 100: less to fit, steadier targets):
#   123: 25.1k, 1: 24.9k, 2: 24.7k, 3: 24.3k, 4: 23.8k, 5: 24.6k, 6: 24.7k, 7: 23.5k, 8: 34.0k,
#   9: 24.3k. No miss, solved well inside the budget: the values below (~40 s here on 1 thread).
# Also: epsilon 1.0 -> 0.02 over 10k steps, learning from 1k transitions, a 50k replay (nearly the
# whole run is kept, so early failures are not forgotten). A run is deterministic for its seed on a
# given machine; the seed sweep is the margin for another machine's float rounding.
HYPERPARAMS = {
    "lr": "1e-3",
    "gamma": "0.98",
    "batch_size": "64",
    "replay_size": "50000",
    "replay_initial": "1000",
    "target_sync_steps": "2000",
    "epsilon_start": "1.0",
    "epsilon_final": "0.02",
    "epsilon_steps": "10000",
    "loss": "huber",
    "mlp_hidden": "256",
    "seed": "123",
}


def test_serial_loop_solves_cartpole(run_train, one_torch_thread):
    args = ["--env", "CartPole-v1", "--stop-reward", str(BOUND), "--max-steps", str(BUDGET)]
    for name, value in HYPERPARAMS.items():
        args += ["--" + name.replace("_", "-"), value]
    result = run_train(*args)

    solved = result["solved"]["mean100"]
    assert result["status"] == "solved", (
        f"not solved: {result['stop_reason']}; last mean100 {result['last_mean100']} "
        f"after {result['episodes']} episodes, {result['steps']} steps")
    assert result["stop_reason"].startswith("solved")
    assert solved["steps"] is not None and solved["steps"] <= BUDGET
    assert result["steps"] == solved["steps"]  # the run stops at the step that solved it
    assert solved["episodes"] >= 100  # the rule needs a full window
    curve = result["reward_curve"]
    assert len(curve) == result["episodes"] == solved["episodes"]
    last100 = [reward for _, _, _, reward in curve[-100:]]
    assert len(last100) == 100 and sum(last100) / 100 >= BOUND
    assert result["last_mean100"] == pytest.approx(sum(last100) / 100)
    assert max(last100) <= 500  # CartPole-v1 episodes are capped at 500 steps
    assert result["frames_per_step"] == 1
    assert result["config"]["flags"]["loop"] == "serial"
    assert result["config"]["hyperparams"]["env"] == "CartPole-v1"
