"""The learner: online net, target net and Adam, and one update step with the speed flags.

Every path runs the same `loss.sgd_step` (Bellman loss, backward, Adam step); the flags only
change how it is executed, so each can be checked against the eager path (tests/test_learner.py)
and timed on its own (benchmarks/learner_speed.py):

- adam        default | foreach | fused: which Adam kernel (make_optimizer)
- bf16        the forward passes of both nets under bf16 autocast; Q-values, Bellman target
              and loss in fp32, weights, gradients and Adam state fp32 (Bf16Forward)
- compile     torch.compile of the whole step: forward+backward as one AOT graph, the Adam step
              as another (the "compiled optimizer" recipe; with adam=fused torch keeps its fused
              kernel out of compile, it is one kernel already); the first calls compile
- cuda_graph  the whole step (forward, backward, capturable Adam) captured once in a CUDA
              graph over static batch tensors and replayed per update (CUDA only)
"""
from __future__ import annotations

import torch
from torch import nn

from .config import check_flags
from .loss import make_target, sgd_step, sync_target


def make_optimizer(params, lr: float, adam: str, capturable: bool = False, eps: float = 1e-8) -> torch.optim.Adam:
    """"default" leaves the choice to torch (foreach when all params are on
    CUDA, the per-parameter loop on the CPU)."""
    kinds = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    if adam not in kinds:
        raise ValueError(f"unknown adam {adam!r}: expected one of {', '.join(kinds)}")
    # capturable keeps Adam's step counters on the device, so a CUDA graph can replay the step
    return torch.optim.Adam(params, lr=lr, eps=eps, capturable=capturable, **kinds[adam])  # flag site: adam


class Bf16Forward(nn.Module):
    """net(x) with its convolutions and matmuls in bf16, the Q-values back in
    fp32, so the Bellman target and the loss stay fp32. No weight cast cache: each weight is
    used once per forward, and the cache must be off inside a CUDA graph capture."""

    def __init__(self, net: nn.Module, device_type: str):
        super().__init__()
        self.net, self.device_type = net, device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16, cache_enabled=False):  # flag site: bf16
            q = self.net(x)
        return q.float()


class Learner:
    """Owns net, tgt_net (make_target) and optimizer. update(batch) does one SGD step on a batch
    (obs, actions, returns, discounts, next_obs) already on the device and returns the loss as a
    device tensor (no host sync); sync_target() copies net into tgt_net."""

    def __init__(self, net: nn.Module, hp, flags, device):
        self.device = torch.device(device)
        check_flags(flags, self.device)
        self.net, self.tgt_net = net, make_target(net)
        self.optimizer = make_optimizer(net.parameters(), hp.lr, flags.adam, capturable=flags.cuda_graph,
                                        eps=hp.adam_eps)
        self.kind, self.no_grad, self.double = hp.loss, flags.no_grad, hp.double
        if flags.bf16:
            self._net, self._tgt = Bf16Forward(self.net, self.device.type), Bf16Forward(self.tgt_net, self.device.type)
        else:
            self._net, self._tgt = self.net, self.tgt_net
        self.flags = flags
        # Dynamo breaks the graph at loss.backward(); the forward and its
        # backward become one compiled graph, opt.step() another (the part that helps on GPU:
        # one generated kernel instead of many small ones per parameter)
        self._step = torch.compile(self._sgd_step) if flags.compile else self._sgd_step  # flag site: compile
        self._graph: torch.cuda.CUDAGraph | None = None  # captured on the first update
        self._static_batch: list[torch.Tensor] = []
        self._static_loss: torch.Tensor | None = None

    def _sgd_step(self, *batch: torch.Tensor) -> torch.Tensor:
        # the eager reference; the no_grad flag acts in dqn_loss, at the target net's forward
        return sgd_step(self._net, self._tgt, self.optimizer, batch, self.no_grad, self.kind, self.double)

    def update(self, batch) -> torch.Tensor:
        if not self.flags.cuda_graph:  # flag site: cuda_graph
            return self._step(*batch)
        if self._graph is None:
            self._capture(batch)
        if any(s.shape != b.shape for s, b in zip(self._static_batch, batch)):
            raise ValueError(f"cuda_graph: batch shapes {[tuple(b.shape) for b in batch]} differ from the "
                             f"captured {[tuple(s.shape) for s in self._static_batch]}")
        for static, b in zip(self._static_batch, batch):
            static.copy_(b)
        self._graph.replay()
        return self._static_loss.clone()  # the next replay overwrites the static output

    def sync_target(self) -> None:
        # load_state_dict copies in place: a captured graph keeps reading the target's tensors
        sync_target(self.net, self.tgt_net)

    def _capture(self, batch) -> None:
        """torch.cuda.graphs' whole-network capture: warm up on a side stream (cuBLAS handles,
        autograd and Adam state get allocated outside the graph), then capture one step. The
        warm-up steps are real steps, so weights and Adam state are put back afterwards, in
        place: the graph records their addresses."""
        self._static_batch = [b.clone() for b in batch]
        saved = self._snapshot()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self._sgd_step(*self._static_batch)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._restore(saved)
        # grads None at capture: backward allocates them from the graph's pool and each replay
        # writes (not accumulates) them, so no zero_grad is needed between replays
        self.optimizer.zero_grad(set_to_none=True)
        self._graph = torch.cuda.CUDAGraph()
        # captured on the warm-up stream: BLAS handles and workspaces are per stream, and one
        # created lazily during capture would fail it
        with torch.cuda.graph(self._graph, stream=side):
            self._static_loss = self._sgd_step(*self._static_batch).detach()

    def _snapshot(self):
        params = [p.detach().clone() for p in self.net.parameters()]
        state = {p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in self.optimizer.state.items()}
        return params, state

    @torch.no_grad()
    def _restore(self, saved) -> None:
        params, state = saved
        for p, value in zip(self.net.parameters(), params):
            p.copy_(value)
        for p, s in self.optimizer.state.items():
            for k, v in s.items():
                if torch.is_tensor(v):
                    # Adam's fresh state is all zeros (step 0, both moments 0)
                    v.copy_(state[p][k]) if p in state else v.zero_()
