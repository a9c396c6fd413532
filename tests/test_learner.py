"""The learner's speed flags against the eager reference: the same seeded weights and the same
batches through today's code (make_target, Adam, loss.sgd_step) and through Learner with a flag.

Scenario (_run): update on batch 0, update on batch 1, sync_target, update on batch 2. We compare
the three losses (the first checks the forward pass, the later ones also the updates and the
target sync), the parameters after each step and the last gradients.

Parameters are compared as the relative L2 error of the update, |dp - dp_ref| / |dp_ref|, with
dp = params after step k - initial params. Not elementwise: Adam's first steps move each weight
by about lr * sign(grad), so a gradient element that is ~0 in both runs can flip sign from
rounding alone and move by 2 lr. An elementwise bound that allows that would check nothing.
"""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters  # internal, but the one way to see that compile compiled

from fastdqn.config import Flags, Hyperparams, check_flags
from fastdqn.errors import UsageError
from fastdqn.learner import Learner
from fastdqn.loss import discounts_of, make_target, sgd_step, sync_target
from fastdqn.model import MLP, NatureDQN

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
HP = Hyperparams()  # lr 1e-4, gamma 0.99, mse: the book's values

# (loss rtol, update rel. error, gradient rel. error) per flag, fp32 flags measured on this CPU:
# - foreach: the same per-element arithmetic as the default loop: measured exact; bound = rounding.
# - fused: one kernel, its own operation order: update error measured 1e-6.
# - compile: inductor fuses and reorders the elementwise math of forward, backward and Adam:
#   loss 1e-6, update error 3e-5, gradients 3e-6 measured (NatureDQN and MLP); 30x margin.
# - bf16: 8 mantissa bits, each Q-value rounded by up to 2^-9 = 0.2%: loss measured 0.4% off
#   (MLP), gradients 9%, updates 5-13% (the sign flips above); bounds 2.5-4x that. They still
#   catch what matters: a missing or doubled step (error 1), a wrong sign (2), a wrong loss.
TOL = {"foreach": (1e-6, 1e-5, 1e-6), "fused": (1e-6, 1e-4, 1e-6),
       "compile": (1e-5, 1e-3, 1e-4), "bf16": (2e-2, 0.3, 0.3)}
# on CUDA the eager reference itself is not bit-reproducible where cuDNN's backward uses atomics;
# the deterministic_cuda fixture pins deterministic kernels and fp32 (no TF32) for every test here,
# and the bounds stay looser than on the CPU until measured on a GPU
TOL_CUDA = {"foreach": (1e-4, 1e-2, 1e-3), "fused": (1e-4, 1e-2, 1e-3),
            "compile": (1e-4, 1e-2, 1e-3), "cuda_graph": (1e-4, 1e-2, 1e-3), "bf16": TOL["bf16"]}


@pytest.fixture(autouse=True)
def deterministic_cuda():
    """Equality tests on CUDA: deterministic cuDNN kernels, no autotuning and no TF32, so eager and
    flag runs differ by the flag alone (cuDNN's weight gradients otherwise vary from run to run,
    and Adam's near-sign first steps magnify that)."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = True, False, False, False
    yield
    cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


def flags(**changes) -> Flags:
    return dataclasses.replace(Flags(), **changes)


def _net(kind: str, device) -> torch.nn.Module:
    torch.manual_seed(0)
    net = MLP(8, 6) if kind == "mlp" else NatureDQN(4, 6)
    return net.to(device)


def _batches(kind: str, device, n: int = 3, size: int = 32) -> list[tuple]:
    """Random transitions: float vectors for the MLP, Pong-shaped uint8 frame stacks otherwise."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        if kind == "mlp":
            obs, next_obs = torch.randn(2, size, 8, generator=g)
        else:
            obs, next_obs = torch.randint(0, 256, (2, size, 4, 84, 84), generator=g, dtype=torch.uint8)
        batch = (obs, torch.randint(0, 6, (size,), generator=g), torch.randint(-1, 2, (size,), generator=g).float(),
                 discounts_of(torch.rand(size, generator=g) < 0.1, HP.gamma), next_obs)
        out.append(tuple(t.to(device) for t in batch))
    return out


def _reference(net, batches, hp=HP):
    """Today's loops: make_target, Adam(lr), sgd_step, sync_target after the second step."""
    tgt, opt = make_target(net), torch.optim.Adam(net.parameters(), lr=hp.lr)
    return _scenario(net, batches, lambda b: sgd_step(net, tgt, opt, b, True, hp.loss),
                     lambda: sync_target(net, tgt))


def _learner(net, batches, fl, device, hp=HP):
    learner = Learner(net, hp, fl, device)
    return _scenario(net, batches, learner.update, learner.sync_target)


def _scenario(net, batches, update, sync):
    losses, params = [], []
    for i, b in enumerate(batches):
        losses.append(update(b))  # kept as tensors until the end: each must be its own value
        params.append([p.detach().clone() for p in net.parameters()])
        if i == 1:
            sync()
    grads = [p.grad.detach().clone() for p in net.parameters()]
    return [loss.item() for loss in losses], params, grads


def _rel(a: list, b: list) -> float:
    num = sum(((x.double() - y.double()) ** 2).sum() for x, y in zip(a, b))
    return (num / sum((y.double() ** 2).sum() for y in b)).sqrt().item()


def check_same(kind: str, fl: Flags, tol: tuple, device="cpu", n_batches: int = 3):
    net = _net(kind, device)
    start = [p.detach().clone() for p in net.parameters()]
    batches = _batches(kind, device, n_batches)
    ref_loss, ref_params, ref_grads = _reference(copy.deepcopy(net), batches)
    loss, params, grads = _learner(copy.deepcopy(net), batches, fl, device)
    loss_rtol, update_tol, grad_tol = tol
    assert loss == pytest.approx(ref_loss, rel=loss_rtol)
    for k, (p, ref_p) in enumerate(zip(params, ref_params)):
        err = _rel([a - s for a, s in zip(p, start)], [a - s for a, s in zip(ref_p, start)])
        assert err < update_tol, f"step {k + 1}: update differs from eager by {err:.2e} (relative)"
    err = _rel(grads, ref_grads)
    assert err < grad_tol, f"gradients differ from eager by {err:.2e} (relative)"


# --- eager and the CPU flags -----------------------------------------------------------------

@pytest.mark.parametrize("kind,hp", [("mlp", HP), ("nature", HP),
                                     ("mlp", dataclasses.replace(HP, loss="huber", gamma=0.9, lr=1e-3))])
def test_eager_is_todays_sgd_step(kind, hp):
    """Flags off, the learner is exactly the loops' make_target + Adam + sgd_step."""
    net, batches = _net(kind, "cpu"), _batches(kind, "cpu")
    ref = _reference(copy.deepcopy(net), batches, hp)
    got = _learner(copy.deepcopy(net), batches, flags(), "cpu", hp)
    assert got[0] == ref[0]
    for p, q in zip(got[1] + [got[2]], ref[1] + [ref[2]]):
        assert all(torch.equal(a, b) for a, b in zip(p, q))


@pytest.mark.parametrize("kind", ["mlp", "nature"])
@pytest.mark.parametrize("name,fl", [("foreach", flags(adam="foreach")), ("fused", flags(adam="fused")),
                                     ("bf16", flags(bf16=True)), ("bf16", flags(bf16=True, adam="fused"))])
def test_flag_matches_eager_cpu(kind, name, fl):
    check_same(kind, fl, TOL[name])


def _compiled_graphs(fl: Flags) -> int:
    """Graphs a compiled update must have made: loss forward+backward, and the Adam step unless
    fused (torch leaves the fused kernel out of compile: it is one kernel already)."""
    return 1 if fl.adam == "fused" else 2


@pytest.mark.slow
@pytest.mark.parametrize("kind,name,fl", [
    ("mlp", "compile", flags(compile=True, adam="fused")),
    ("mlp", "bf16", flags(compile=True, bf16=True)),
    ("nature", "compile", flags(compile=True)),
])
def test_compile_matches_eager_cpu(kind, name, fl):
    torch._dynamo.reset()  # dynamo starts afresh: no recompile limit left by earlier learners
    graphs = counters["stats"]["unique_graphs"]
    check_same(kind, fl, TOL[name])
    assert counters["stats"]["unique_graphs"] >= graphs + _compiled_graphs(fl)


@pytest.mark.parametrize("no_grad,builds_graph", [(True, False), (False, True)])
@pytest.mark.parametrize("bf16", [False, True])
def test_no_grad_flag_acts_at_the_target_forward(no_grad, builds_graph, bf16):
    net = _net("mlp", "cpu")
    learner = Learner(net, HP, flags(no_grad=no_grad, bf16=bf16), "cpu")
    seen = []
    learner.tgt_net.register_forward_hook(lambda _m, _i, out: seen.append(out.requires_grad))
    loss = learner.update(_batches("mlp", "cpu", n=1)[0])
    assert seen == [builds_graph]
    assert loss.dim() == 0 and loss.dtype == torch.float32


def test_learner_owns_target_and_sync():
    net = _net("mlp", "cpu")
    learner = Learner(net, HP, flags(), "cpu")
    assert learner.net is net and learner.tgt_net is not net
    learner.update(_batches("mlp", "cpu", n=1)[0])
    assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), learner.tgt_net.parameters()))
    learner.sync_target()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), learner.tgt_net.parameters()))


@pytest.mark.parametrize("adam,expect", [("default", {"foreach": None, "fused": None}),
                                         ("foreach", {"foreach": True, "fused": None}),
                                         ("fused", {"foreach": None, "fused": True})])
def test_adam_flag_reaches_the_optimizer(adam, expect):
    learner = Learner(_net("mlp", "cpu"), HP, flags(adam=adam), "cpu")
    group = learner.optimizer.param_groups[0]
    assert {k: group[k] for k in expect} == expect
    assert group["lr"] == HP.lr and group["capturable"] is False


# --- rejected combinations -------------------------------------------------------------------

@pytest.mark.parametrize("fl,device,message", [
    (flags(cuda_graph=True), "cpu", "cuda_graph needs a CUDA device, got cpu"),
    (flags(cuda_graph=True, compile=True), "cuda", "cuda_graph and compile exclude each other: choose one"),
])
def test_check_flags_rejects(fl, device, message):
    with pytest.raises(UsageError) as e:
        check_flags(fl, torch.device(device))
    assert str(e.value) == message and "\n" not in str(e.value)


def test_learner_rejects_cuda_graph_on_cpu():
    with pytest.raises(UsageError, match="cuda_graph needs a CUDA device"):
        Learner(_net("mlp", "cpu"), HP, flags(cuda_graph=True), "cpu")


@pytest.mark.parametrize("fl", [flags(), flags(adam="fused", bf16=True), flags(compile=True, adam="foreach")])
def test_check_flags_accepts_on_cpu(fl):
    check_flags(fl, torch.device("cpu"))


# --- CUDA: run only where a GPU is present ------------------------------------------------------

@CUDA
@pytest.mark.parametrize("name,fl", [
    ("foreach", flags(adam="foreach")), ("fused", flags(adam="fused")), ("bf16", flags(bf16=True)),
    ("cuda_graph", flags(cuda_graph=True)), ("cuda_graph", flags(cuda_graph=True, adam="fused")),
    ("cuda_graph", flags(cuda_graph=True, adam="foreach")), ("bf16", flags(cuda_graph=True, bf16=True)),
    ("cuda_graph", flags(cuda_graph=True, no_grad=False)),
])
def test_flag_matches_eager_cuda(name, fl):
    # more batches than the capture's 3 warm-up steps: the replays must start from the weights
    # and Adam state the warm-up found, and go on from there
    check_same("nature", fl, TOL_CUDA[name], device="cuda", n_batches=5)


@CUDA
@pytest.mark.slow
@pytest.mark.parametrize("name,fl", [("compile", flags(compile=True)), ("compile", flags(compile=True, adam="fused")),
                                     ("bf16", flags(compile=True, bf16=True))])
def test_compile_matches_eager_cuda(name, fl):
    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    check_same("nature", fl, TOL_CUDA[name], device="cuda")
    assert counters["stats"]["unique_graphs"] >= graphs + _compiled_graphs(fl)


@CUDA
def test_cuda_graph_replays_and_rejects_other_shapes():
    net = _net("nature", "cuda")
    learner = Learner(net, HP, flags(cuda_graph=True), "cuda")
    b32, b16 = _batches("nature", "cuda", n=1)[0], _batches("nature", "cuda", n=1, size=16)[0]
    first = learner.update(b32)
    assert learner._graph is not None and first.device.type == "cuda"
    before = [p.detach().clone() for p in net.parameters()]
    second = learner.update(b32)
    assert first.data_ptr() != second.data_ptr()  # clones: the next replay does not overwrite them
    assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), before))  # the replay stepped
    with pytest.raises(ValueError, match="differ from the captured"):
        learner.update(b16)


@CUDA
def test_check_flags_accepts_cuda_combinations():
    for fl in (flags(cuda_graph=True, adam="fused", bf16=True), flags(compile=True, adam="fused", bf16=True)):
        check_flags(fl, torch.device("cuda"))
