"""torch_pong (fastdqn/envs/torch_pong.py): the rules, frame skip, determinism, rendering,
autoreset, the vector contract of fastdqn/envs/vector.py, and CPU == CUDA where CUDA exists."""
from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from fastdqn.envs import torch_pong as tp
from fastdqn.envs.torch_pong import F, TorchPong, TorchPongVecEnv
from helpers import hparams
from test_backends import check_samples, check_streams, drive

NOOP, UP, DOWN = 0, 2, 3  # RIGHT moves the paddle up, LEFT down (as in ALE)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: small ops, shared cores


def game(n: int = 1, **kw) -> TorchPong:
    env = TorchPong(n, "cpu", **kw)
    env.reset(0)
    return env


def put(env: TorchPong, **fields) -> None:
    """Set state fields (in units) in every game; the ball is in play unless serve_timer is given."""
    fields.setdefault("serve_timer", 0)
    for name, value in fields.items():
        getattr(env.state, name).fill_(value)


def act(env: TorchPong, action: int):
    return env.step(torch.full((env.num_envs,), action, dtype=torch.int64))


def until_point(env: TorchPong, steps: int = 20):
    for _ in range(steps):
        r = act(env, NOOP)
        if r.rewards.any():
            return r
    raise AssertionError("no point scored")


MID = (tp.TOP + tp.BOTTOM) // 2


# --- rules ---------------------------------------------------------------------------------------

def test_ball_past_the_opponent_scores_for_the_agent():
    env = game()  # the opponent's paddle at the top, the ball low, in front of its face, going left
    put(env, opp_y=tp.TOP, ball_x=tp.OPP_X + tp.PADDLE_W + 2 * F, ball_y=tp.BOTTOM - 4 * F,
        ball_vx=-F, ball_vy=0)
    r = until_point(env)
    assert r.rewards.tolist() == [1.0] and env.state.score_agent.item() == 1
    assert env.state.score_opp.item() == 0 and not r.done.any()
    assert env.state.serve_timer.item() > 0  # out of play until the serve


def test_ball_past_the_agent_scores_for_the_opponent():
    env = game()
    put(env, agent_y=tp.TOP, ball_x=tp.AGENT_X - 3 * F, ball_y=tp.BOTTOM - 4 * F, ball_vx=F, ball_vy=0)
    r = until_point(env)
    assert r.rewards.tolist() == [-1.0] and env.state.score_opp.item() == 1


@pytest.mark.parametrize("offset", [0, F, -F, 2 * F, -3 * F, 3 * F + F // 2])
def test_agent_paddle_hit_reflects_and_the_offset_sets_vy(offset):
    """The ball meets the paddle's face with its center `offset` units below the paddle's center."""
    env = game()
    paddle = MID - tp.PADDLE_H // 2
    put(env, agent_y=paddle, ball_x=tp.AGENT_X - tp.BALL_W - 2 * F, ball_vx=F, ball_vy=0,
        ball_y=paddle + tp.PADDLE_H // 2 + offset - tp.BALL_H // 2)
    r = act(env, NOOP)
    assert not r.rewards.any()
    s = env.state
    scale = tp.SPEEDUP_DIV + 1  # the rally's first hit speeds the ball up by 1/8
    assert s.ball_vx.item() == -tp.BALL_VX * scale // tp.SPEEDUP_DIV
    assert s.ball_x.item() < tp.AGENT_X - tp.BALL_W  # on its way back
    english = max(-tp.MAX_VY, min(tp.MAX_VY, offset * tp.MAX_VY // tp.STEEP_OFFSET))
    assert s.ball_vy.item() == english * scale // tp.SPEEDUP_DIV
    assert np.sign(s.ball_vy.item()) == np.sign(offset)  # below the center: down; above: up
    if abs(offset) >= tp.STEEP_OFFSET:  # the edges: steepest
        assert abs(s.ball_vy.item()) == tp.MAX_VY * scale // tp.SPEEDUP_DIV
    assert s.hits.item() == 1


def test_opponent_returns_a_ball_it_covers():
    env = game()
    put(env, opp_y=MID - tp.PADDLE_H // 2, ball_x=tp.OPP_X + tp.PADDLE_W + 2 * F, ball_y=MID - tp.BALL_H // 2,
        ball_vx=-F, ball_vy=0)
    r = act(env, NOOP)
    assert not r.rewards.any() and env.state.ball_vx.item() > 0 and env.state.hits.item() == 1


def test_the_ball_misses_a_paddle_beside_it():
    env = game()  # the ball passes just below the paddle's bottom edge
    put(env, agent_y=MID - tp.PADDLE_H, ball_x=tp.AGENT_X - tp.BALL_W - 2 * F, ball_y=MID, ball_vx=F, ball_vy=0)
    assert until_point(env).rewards.tolist() == [-1.0]


@pytest.mark.parametrize("wall", ["top", "bottom"])
def test_walls_reflect(wall):
    env = game()
    if wall == "top":  # one pixel below the wall going up one pixel a frame: bounces in frame 2
        put(env, ball_x=tp.CENTER_X, ball_y=tp.TOP + F, ball_vx=F, ball_vy=-F)
        want_y, want_vy = tp.TOP + 3 * F, F
    else:
        put(env, ball_x=tp.CENTER_X, ball_y=tp.BOTTOM - tp.BALL_H - F, ball_vx=F, ball_vy=F)
        want_y, want_vy = tp.BOTTOM - tp.BALL_H - 3 * F, -F
    act(env, NOOP)
    assert env.state.ball_y.item() == want_y and env.state.ball_vy.item() == want_vy
    assert env.state.ball_vx.item() == F  # walls leave vx alone


@pytest.mark.parametrize("side", ["agent", "opponent"])
def test_first_to_points_ends_the_episode(side):
    env = game(points=3)
    act(env, NOOP)  # some steps into the episode
    if side == "agent":
        put(env, score_agent=2, score_opp=1, opp_y=tp.TOP, ball_x=tp.OPP_X + tp.PADDLE_W + 2 * F,
            ball_y=tp.BOTTOM - 4 * F, ball_vx=-F, ball_vy=0)
    else:
        put(env, score_agent=0, score_opp=2, agent_y=tp.TOP, ball_x=tp.AGENT_X - 3 * F,
            ball_y=tp.BOTTOM - 4 * F, ball_vx=F, ball_vy=0)
    steps = 1
    for _ in range(20):
        r = act(env, NOOP)
        steps += 1
        if r.done.any():
            break
    assert r.terminated.tolist() == [True] and r.truncated.tolist() == [False]
    assert r.episode_returns.tolist() == ([2.0] if side == "agent" else [-3.0])
    assert r.episode_lengths.tolist() == [steps] and r.episode_lengths.dtype == torch.int64
    assert r.rewards.tolist() == ([1.0] if side == "agent" else [-1.0])
    s = env.state  # a new game
    assert s.score_agent.item() == s.score_opp.item() == s.steps.item() == s.frames.item() == 0


def test_episode_cap_truncates():
    env = game(max_episode_frames=40)  # 10 agent steps
    for i in range(10):
        r = act(env, NOOP)
        assert r.done.item() == (i == 9)
    assert r.truncated.item() and not r.terminated.item() and r.episode_lengths.item() == 10


def test_paddle_speeds_and_action_meanings():
    """RIGHT (and RIGHTFIRE) move the agent's paddle up, LEFT (and LEFTFIRE) down, NOOP and FIRE
    not; the opponent moves at most OPP_SPEED a frame, slower than the steepest ball."""
    assert tp.OPP_SPEED < tp.MAX_VY <= tp.AGENT_SPEED
    assert game().get_action_meanings() == ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    env = game(6)
    put(env, agent_y=MID, opp_y=tp.TOP, ball_x=tp.CENTER_X, ball_y=tp.BOTTOM - tp.BALL_H, ball_vx=0, ball_vy=0)
    env.step(torch.arange(6))
    d = 4 * tp.AGENT_SPEED
    assert (env.state.agent_y - MID).tolist() == [0, 0, -d, d, -d, d]
    assert (env.state.opp_y - tp.TOP).tolist() == [4 * tp.OPP_SPEED] * 6  # towards the ball, at full speed


def test_paddles_stay_on_the_playfield():
    env = game(2)
    for _ in range(30):
        env.step(torch.tensor([UP, DOWN]))
    assert env.state.agent_y.tolist() == [tp.TOP, tp.BOTTOM - tp.PADDLE_H]


@pytest.mark.parametrize("skip", [4, 2])
def test_one_step_is_frame_skip_frames(skip):
    env = game(frame_skip=skip)
    put(env, ball_x=tp.CENTER_X, ball_y=MID, ball_vx=F, ball_vy=F // 2)
    act(env, NOOP)
    s = env.state
    assert s.ball_x.item() == tp.CENTER_X + skip * F and s.ball_y.item() == MID + skip * F // 2
    assert s.frames.item() == skip and s.steps.item() == 1


def test_serve_after_the_delay():
    env = game(64)
    waited = tp.SERVE_DELAY // 4
    for _ in range(waited):
        assert (env.state.serve_timer > 0).all() and (env.state.ball_vx == 0).all()
        act(env, NOOP)
    s = env.state
    assert (s.serve_timer == 0).all() and (s.ball_vx.abs() == tp.BALL_VX).all()
    assert (s.ball_vx > 0).any() and (s.ball_vx < 0).any()  # both sides get serves
    assert len(set(s.ball_vy.tolist())) > 1 and len(set(s.ball_y.tolist())) > 1


# --- balance -------------------------------------------------------------------------------------

def scripted(env: TorchPong) -> torch.Tensor:
    """Move the paddle's center towards where the ball will be after this step (3-pixel dead band)."""
    s = env.state
    ball = s.ball_y + tp.BALL_H // 2 + env.frame_skip * s.ball_vy
    paddle = s.agent_y + tp.PADDLE_H // 2
    dead = tp.AGENT_SPEED * env.frame_skip // 2
    a = torch.where(ball < paddle - dead, UP, NOOP)
    return torch.where(ball > paddle + dead, DOWN, a)


def first_returns(env: TorchPong, policy, max_steps: int) -> torch.Tensor:
    n = env.num_envs
    ended, returns = torch.zeros(n, dtype=torch.bool), torch.zeros(n)
    gen = torch.Generator().manual_seed(0)
    for _ in range(max_steps):
        a = torch.randint(0, 6, (n,), generator=gen) if policy is None else policy(env)
        r = env.step(a)
        returns = torch.where(r.done & ~ended, r.episode_returns, returns)
        ended |= r.done
        if ended.all():
            return returns
    raise AssertionError("games did not end")


def test_random_play_loses_and_tracking_the_ball_wins():
    """Short games (2 points) of the full-length balance in results/amd-epyc-2c/torch_pong_balance.md."""
    random_returns = first_returns(game(32, points=2), None, 400)
    tracking_returns = first_returns(game(32, points=2), scripted, 2000)
    assert random_returns.mean() <= -1.7, random_returns
    assert tracking_returns.mean() >= 1.7, tracking_returns


# --- determinism ---------------------------------------------------------------------------------

def trajectory(seed: int, steps: int = 150, n: int = 8, device="cpu"):
    env = TorchPong(n, device, points=3)
    out = [env.reset(seed).cpu()]
    actions = torch.from_numpy(np.random.default_rng(7).integers(0, 6, (steps, n)))
    for a in actions:
        r = env.step(a.to(device))
        out += [getattr(r, f).cpu() for f in ("obs", "next_obs", "rewards", "terminated", "truncated",
                                                "done", "episode_returns", "episode_lengths")]
    out += [getattr(env.state, f.name).cpu() for f in fields(env.state)]
    return out


def test_same_seed_same_games_other_seed_other_games():
    a, b, c = trajectory(3), trajectory(3), trajectory(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    steps = a[1:1 + 8 * 150]
    assert torch.stack(steps[2::8]).any() and torch.stack(steps[5::8]).any()  # points and game ends covered


def test_reset_reseeds():
    env = TorchPong(4, "cpu")
    first = [env.reset(5).clone()] + [act(env, NOOP).obs for _ in range(15)]
    again = [env.reset(5).clone()] + [act(env, NOOP).obs for _ in range(15)]
    assert all(torch.equal(x, y) for x, y in zip(first, again))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_give_identical_games_without_host_sync():
    cuda = torch.device("cuda")
    env = TorchPong(4, cuda, points=3)
    env.reset(0)
    actions = torch.randint(0, 6, (20, 4), device=cuda)
    torch.cuda.set_sync_debug_mode("error")  # any host sync in reset/step raises
    try:
        for a in actions:
            r = env.step(a)
        env.reset(1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert r.obs.is_cuda and r.rewards.is_cuda and env.state.ball_x.is_cuda
    on_cpu, on_gpu = trajectory(3, device="cpu"), trajectory(3, device=cuda)
    assert all(torch.equal(x, y) for x, y in zip(on_cpu, on_gpu, strict=True))


# --- rendering -----------------------------------------------------------------------------------

def expected_frame(size: int, ball=None, agent_y=None, opp_y=None, background: int = 87) -> np.ndarray:
    """The frame by hand, from positions in pixels of the 84x84 court: each object's edges
    scaled to `size` and rounded, at least one pixel."""
    def span(lo, hi):
        a = int(np.floor(lo * size / 84 + 0.5))
        return slice(a, max(a + 1, int(np.floor(hi * size / 84 + 0.5))))
    f = np.full((size, size), background, np.uint8)
    f[span(10, 14)] = 236
    f[span(78, 84)] = 236
    f[span(opp_y, opp_y + 6), span(8, 10)] = 148
    f[span(agent_y, agent_y + 6), span(74, 76)] = 147
    if ball is not None:
        f[span(ball[1], ball[1] + 2), span(ball[0], ball[0] + 1)] = 236
    return f


@pytest.mark.parametrize("size, background", [(84, 87), (32, 87), (16, 87), (36, 0)])
def test_frames_show_the_objects_where_the_state_puts_them(size, background):
    env = TorchPong(3, "cpu", size=size, background=background)
    env.reset(0)
    # per game: ball (x, y), agent paddle top, opponent paddle top, in court pixels
    games = [((40, 30), 20, 50), ((60, 70), 71, 14), ((12, 15), 40, 33)]
    s = env.state
    for i, ((bx, by), ay, oy) in enumerate(games):
        s.ball_x[i], s.ball_y[i], s.agent_y[i], s.opp_y[i] = bx * F, by * F, ay * F, oy * F
    s.serve_timer.fill_(0)
    frames = env.render(s)
    assert frames.dtype == torch.uint8 and frames.shape == (3, size, size)
    for i, (ball, ay, oy) in enumerate(games):
        want = expected_frame(size, ball, ay, oy, background)
        assert np.array_equal(frames[i].numpy(), want), i
    if size == 84:  # the objects' exact pixels at full size
        f = frames[0].numpy()
        assert (f[30:32, 40] == 236).all() and f[29, 40] == f[32, 40] == f[30, 39] == f[30, 41] == 87
        assert (f[20:26, 74:76] == 147).all() and (f[50:56, 8:10] == 148).all()
        assert (f[10:14] == 236).all() and (f[78:] == 236).all() and (f[:10] == 87).all()
    # every object at least a pixel, even at 16 pixels: 3 ball/paddle colors present
    assert {147, 148, 236} <= set(np.unique(frames.numpy()).tolist())


def test_no_ball_drawn_out_of_play():
    env = game()
    frame = env.render(env.state)[0].numpy()  # at the start: waiting for the serve
    mid = (tp.PADDLE_START // F)
    assert np.array_equal(frame, expected_frame(84, None, mid, mid))
    assert np.array_equal(env.obs[0].numpy(), np.stack([frame] * 4))  # reset obs: the frame repeated


def test_step_renders_the_last_skipped_frame():
    env = game()
    put(env, ball_x=30 * F, ball_y=40 * F, ball_vx=F, ball_vy=0)
    r = act(env, NOOP)
    assert np.array_equal(r.obs[0, -1].numpy(), env.render(env.state)[0].numpy())
    assert r.obs[0, -1, 40, 34] == 236  # 4 frames on


# --- autoreset and the vector contract -----------------------------------------------------------

@pytest.mark.parametrize("stack", [4, 2])
def test_autoreset_same_step(stack):
    env = game(2, points=1, stack=stack)
    for _ in range(3):
        prev = act(env, NOOP).obs
    # game 0 is about to lose its only point; game 1 goes on
    s = env.state
    s.serve_timer[0], s.agent_y[0], s.ball_x[0], s.ball_y[0] = 0, tp.TOP, tp.COURT - 2 * F, tp.BOTTOM - 4 * F
    s.ball_vx[0], s.ball_vy[0] = F, 0
    final_state = s.clone()
    r = act(env, NOOP)
    assert r.done.tolist() == [True, False] and r.terminated.tolist() == [True, False]
    assert r.episode_returns[0] == -1.0 and r.episode_lengths[0] == 4
    # next_obs: the final observation (the frame after the point, no ball); obs: a new game's first
    assert torch.equal(r.next_obs[:, :-1], prev[:, 1:])
    assert (r.next_obs[0, -1] != env.render(final_state)[0]).any()  # the point was played
    reset_obs = TorchPong(1, "cpu", stack=stack).reset(0)[0]
    assert torch.equal(r.obs[0], reset_obs) and torch.equal(r.obs[1], r.next_obs[1])
    s = env.state
    assert [s.steps[0].item(), s.frames[0].item(), s.score_opp[0].item()] == [0, 0, 0]
    assert s.steps[1].item() == 4
    r2 = act(env, NOOP)  # the new game goes on from the reset obs
    assert torch.equal(r2.next_obs[0, :-1], reset_obs[1:]) and r2.episode_lengths[0] == 1


@pytest.mark.parametrize("stack", [4, 2, 1])
def test_obs_and_next_obs_follow_the_simple_rule(stack):
    """step() builds obs with a row gather (reset rows from a spare row); the simple rule it must
    equal: s' = the previous stack shifted plus the new frame, obs = s' where the game goes on and
    the reset obs where it ended."""
    env = TorchPong(16, "cpu", stack=stack, size=36, points=1)  # 1-point games: many end
    prev, ended = env.reset(5), 0
    reset_obs = prev[0].clone()
    gen = torch.Generator().manual_seed(0)
    for _ in range(120):
        r = env.step(torch.randint(0, 6, (16,), generator=gen))
        simple_next = torch.cat([prev[:, 1:], r.next_obs[:, -1:]], 1)
        assert torch.equal(r.next_obs, simple_next)
        assert torch.equal(r.obs, torch.where(r.done[:, None, None, None], reset_obs, simple_next))
        prev, ended = r.obs, ended + int(r.done.sum())
    assert ended > 10


@pytest.mark.parametrize("stack,size", [(4, 84), (2, 84), (4, 32)])
def test_vec_env_observation_contract(stack, size):
    env = TorchPongVecEnv(hparams(stack=stack, pong_size=size), 2)
    shape = (stack, size, size)
    assert env.single_observation_space.shape == shape and env.single_observation_space.dtype == np.uint8
    assert env.single_action_space.n == 6 and env.num_envs == env.batch == 2
    obs = env.reset(seed=0)
    assert obs.dtype == np.uint8 and obs.shape == (2,) + shape and obs.max() > obs.min()
    env.send(np.array([0, 1]), np.arange(2))
    r = env.recv()
    assert r.env_ids.dtype == np.int64 and r.env_ids.tolist() == [0, 1]
    assert r.obs.dtype == r.next_obs.dtype == np.uint8 and r.obs.shape == r.next_obs.shape == (2,) + shape
    assert r.rewards.dtype == np.float32 and r.rewards.shape == (2,)
    for a in (r.terminated, r.truncated, r.has_transition, r.reset):
        assert a.dtype == bool and a.shape == (2,)
    env.close()


@pytest.mark.parametrize("points,cap", [(2, 100_000), (21, 240)])
def test_vec_env_no_transition_crosses_an_episode(points, cap):
    """test_backends.py's check of the backends, on torch_pong: terminations (2-point games) and
    truncations (60-step cap)."""
    env = TorchPongVecEnv(hparams(pong_points=points, max_episode_frames=cap, pong_size=32), 3)
    replay, events, episodes = drive(env, 260, seed=5)
    env.close()
    check_streams(events, episodes, stacked=True, min_episodes=2)
    check_samples(replay, events, stacked=True)
    assert len(replay) == 3 * 260
    ends = [ev for stream in events for ev in stream if ev[0] == "step" and (ev[4] or ev[5])]
    if points == 2:
        assert ends and all(ev[4] and not ev[5] for ev in ends)
    else:
        assert {length for _, _, length in episodes} == {cap // 4}
        assert all(ev[5] and not ev[4] for ev in ends)



def assert_same_games(a: TorchPong, b: TorchPong, steps: int = 300) -> None:
    """Step both with the same random actions from the same seed: every step's fields and the final
    states equal, and at least one game ended (the restart path ran)."""
    gen = torch.Generator().manual_seed(3)
    a.reset(5), b.reset(5)
    ended = 0
    for _ in range(steps):
        actions = torch.randint(0, 6, (a.num_envs,), generator=gen)
        ra, rb = a.step(actions.to(a.device)), b.step(actions.to(b.device))
        for f in fields(ra):
            assert torch.equal(getattr(ra, f.name).cpu(), getattr(rb, f.name).cpu()), f.name
        ended += int(ra.done.sum())
    for f in fields(a.state):
        assert torch.equal(getattr(a.state, f.name).cpu(), getattr(b.state, f.name).cpu()), f.name
    assert ended > 0


@pytest.mark.slow
def test_compiled_step_matches_the_eager_step():
    """compile_env: the compiled games' step gives the eager step's bits (integer physics), through
    points, game ends and restarts."""
    # frame skip 2: the same ops as 4 in half the graph (compiling is most of this test's time)
    kw = dict(stack=2, frame_skip=2, size=36, points=2)
    assert_same_games(TorchPong(8, "cpu", **kw), TorchPong(8, "cpu", compiled=True, **kw))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_cuda_step_matches_the_eager_cpu_step():
    assert_same_games(TorchPong(64, "cpu", points=2), TorchPong(64, "cuda", points=2, compiled=True))
