"""Every report plot renders from small synthetic results and is not blank."""
import matplotlib.image as mpimg
import numpy as np
import pytest

from fastdqn.bench.plots import curves_from_tensorboard, mean100_curve, plot_all, plot_reward


def synthetic(seed: int, fps: float, solve_s: float | None, slope: float) -> dict:
    rng = np.random.default_rng(seed)
    curve, wall, step = [], 0.0, 0
    for ep in range(1, 301):
        step += 900
        wall += 900 / fps
        curve.append([ep, step, wall, float(np.clip(-21 + slope * ep + rng.normal(0, 2), -21, 21))])
    return {"fps": fps, "reward_curve": curve,
            "solved": {"mean100": {"seconds": solve_s, "steps": None}},
            "config": {"hyperparams": {"stop_reward": 17.0}},
            "phase_profile": {"trainer": {"share": {"env": 0.3, "act": 0.1, "learn": 0.5, "other": 0.1}}}}


def not_blank(path) -> bool:
    img = mpimg.imread(path)[..., :3]
    return img.std() > 0.02 and len(np.unique(img.reshape(-1, 3), axis=0)) > 20


def test_all_four_plots_render(tmp_path):
    results = {"baseline": [synthetic(1, 150, 5400.0, 0.15), synthetic(2, 160, None, 0.1)],
               "n_envs": [synthetic(3, 400, 2400.0, 0.2), synthetic(4, 420, 2600.0, 0.2)]}
    paths = plot_all(results, tmp_path / "plots", "synthetic")
    assert [p.name for p in paths] == ["reward.png", "fps.png", "solve.png", "phases.png"]
    for p in paths:
        assert p.stat().st_size > 5000 and not_blank(p), p


def test_mean100_curve_is_the_running_window_mean():
    curve = [[i + 1, 10 * (i + 1), float(i), float(i)] for i in range(150)]
    walls, steps, means = mean100_curve(curve)
    assert means[0] == 0 and means[9] == pytest.approx(4.5)        # mean of 0..9
    assert means[149] == pytest.approx(np.mean(np.arange(50, 150)))  # last 100 only
    assert steps[-1] == 1500 and walls[-1] == 149


def test_reward_plot_from_tensorboard_events(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    for run, slope in (("a", 0.1), ("b", 0.2)):
        writer = SummaryWriter(str(tmp_path / "tb" / run))
        for i in range(50):
            writer.add_scalar("episodes/avg_reward", -21 + slope * i, global_step=1000 * i, walltime=100.0 + 10 * i)
        writer.close()
    curves = curves_from_tensorboard(tmp_path / "tb")
    assert len(curves) == 2 and curves[0][0][0] == 0 and curves[0][1][-1] == 49_000
    plot_reward({"from_tb": curves}, tmp_path / "reward.png", "tb", 17.0)
    assert not_blank(tmp_path / "reward.png")
