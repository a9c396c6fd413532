"""When to learn: SGD updates owed after agent steps, their batch size, and target syncs.

The book's schedule (updates_per_step 0): once the replay holds replay_initial transitions, one
update per round of N env steps with batch batch_size x N, i.e. batch_size samples per agent step
whatever N is. The recipe (updates_per_step > 0): that many updates of batch_size per agent step,
e.g. 1/64 with 4,096 envs is 64 updates per round. Counted cumulatively from the agent steps, so
fractional rates and rounds of varying size (async backends) never drift.
"""
from __future__ import annotations

import math


class UpdateSchedule:
    def __init__(self, hp, rows_per_round: int):
        if hp.updates_per_step:  # flag site: updates_per_step
            self.batch_size, self.rate = hp.batch_size, hp.updates_per_step
        else:  # the book's batch_size x N per round of N steps
            self.batch_size, self.rate = hp.batch_size * rows_per_round, 1.0 / rows_per_round
        self.first_step = hp.replay_initial  # the step that fills the replay to replay_initial
        self.done = 0
        self.sync_steps, self.last_sync = hp.target_sync_steps, 0

    @property
    def samples_per_step(self) -> float:
        return self.batch_size * self.rate

    def due(self, steps: int) -> int:
        """Updates to run now that `steps` agent steps are in the replay."""
        # an update is owed as soon as part of it is: the book's loop learns in the very round
        # that fills the replay, whatever N is
        owed = math.ceil(max(0, steps - self.first_step + 1) * self.rate - 1e-9)
        n, self.done = owed - self.done, max(owed, self.done)
        return max(n, 0)

    def sync_due(self, steps: int) -> bool:
        """Whether the target net is to be synced now (after updates at `steps` agent steps)."""
        if steps - self.last_sync < self.sync_steps:
            return False
        self.last_sync = steps
        return True
