"""The synthetic engine: the ``tensorrt_llm`` tensors with no model behind them.

It replays the prompt's own ids cyclically, at a fixed per-stream rate after a fixed first-token
delay, so every figure a load generator measures is known in advance, and every stream's content
can be checked against the request that produced it. A replay is certain: for a request that asks
(``return_log_probs``), each token's log probability is 0.0. Each sequence of a request that asks for several
(``num_return_sequences``) replays the same ids, in a slot of its own. A replay follows no grammar: a guided request
(structured outputs) is refused.

Two schedules (``SCHEDULES``), the same rate either way:

- ``stream``: each request on a clock of its own, from its admission. Requests admitted at different
  times never emit together, so every token reaches the serving stack alone: the worst case for
  per-token serving costs, and the schedule of every figure in the docs unless they say otherwise.
- ``step``: one clock for the engine, as an in-flight batching engine such as TensorRT-LLM's runs: a
  decoding step every ``1 / tokens_per_s`` seconds gives every running request its next token at
  once, and a new request's first token comes with the first step at least ``first_token_s`` after
  its admission (its context phase).
"""

from __future__ import annotations

import heapq
import time

from ..errors import InvalidRequestError
from .loop import EngineLoop, Live
from .request import EngineLimits, EngineRequest

SCHEDULES = ("stream", "step")


def due_time(t: float, period: float, schedule: str, origin: float) -> float:
    """When a token wanted at ``t`` is emitted: at ``t`` (``stream``), or at the first step of the
    engine's clock (steps at ``origin + k * period``) not before ``t`` (``step``)."""
    if schedule == "stream":
        return t
    k = -(-(t - origin - 1e-9 * period) // period)  # ceil, with a due time already on a step kept on it
    return origin + k * period


def synthetic_tokens(input_ids: list[int], n: int, skip: frozenset[int] = frozenset()) -> list[int]:
    """The ids the synthetic engine emits for a prompt: its own tokens, cycled, minus ``skip``."""
    pool = [t for t in input_ids if t not in skip] or [input_ids[-1]]
    return [pool[k % len(pool)] for k in range(n)]


class SyntheticEngine(EngineLoop):
    def __init__(
        self,
        limits: EngineLimits,
        tokens_per_s: float = 50.0,
        first_token_s: float = 0.02,
        skip_ids: frozenset[int] = frozenset({0, 1, 2}),
        name: str = "synthetic",
        tick_s: float = 0.001,
        schedule: str = "stream",
        block_tokens: int = 32,
    ):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: {schedule!r} is not one of {', '.join(SCHEDULES)}")
        self.schedule = schedule
        self.origin = time.monotonic()  # the step clock's zero
        self.period = 1.0 / tokens_per_s
        # the loop wakes at most once per tick and emits every token due by then, as a real engine emits
        # a step's tokens together; due times, not wake times, set the schedule, so the rate is exact
        self.tick_s = tick_s
        self.first_token_s = first_token_s
        self.skip_ids = skip_ids
        self._due: list[tuple[float, int, str]] = []  # (time, seq, the sequence's key)
        self._plans: dict[str, list[int]] = {}
        self._seq = 0
        super().__init__(limits, name, block_tokens)

    def _prepare(self, req: EngineRequest) -> object:
        if req.guide is not None:
            raise InvalidRequestError(
                f"guided_decoding_guide_type: the synthetic engine replays the prompt's tokens and cannot follow a "
                f"{req.guide.type} guide (structured outputs); serve the reference or tensorrt_llm engine for them",
                "guided_decoding_guide_type")

    def _admit(self, live: Live) -> None:
        req = live.req
        self._plans[live.key] = synthetic_tokens(req.input_ids, req.max_new_tokens, self.skip_ids)
        self._push(live.t_admit + self.first_token_s, live.key)

    def _push(self, t: float, rid: str) -> None:
        self._seq += 1
        heapq.heappush(self._due, (due_time(t, self.period, self.schedule, self.origin), self._seq, rid))

    def _step(self, active: list[Live]) -> None:
        now = time.monotonic()
        due: dict[str, list[float]] = {}
        while self._due and self._due[0][0] <= now:
            t, _, rid = heapq.heappop(self._due)
            due.setdefault(rid, []).append(t)
        for rid, times in due.items():
            live = self._active.get(rid)
            plan = self._plans.get(rid)
            if live is None or plan is None:
                continue
            # tokens whose time has come, all of them if the loop fell behind: one response
            t = times[-1]
            n = 1 + int((now - t) / self.period)
            start = len(live.generated)
            tokens = plan[start : start + n]
            # a replay is certain: each token's probability is 1, its log probability 0.0
            self.append_tokens(live, tokens, [0.0] * len(tokens) if live.req.return_log_probs else None)
            if rid in self._active:
                # schedule from the due time, not from now, so the rate does not drift
                self._push(t + n * self.period, rid)
        if self._due:
            with self._cv:
                if not self._waiting and not self._cancel_ids:
                    self._cv.wait(max(self.tick_s - (time.monotonic() - now), self._due[0][0] - time.monotonic()))

    def _on_release(self, live: Live) -> None:
        self._plans.pop(live.key, None)
