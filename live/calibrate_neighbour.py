"""The neighbour phase of a calibration: how much a busy engine on the same machine slows
the calibrated one down (:mod:`control_plane.engine.contention` uses the figures).

Two probes of the design's kinds, a decode window (``batch`` sequences of ``context``
tokens) and a prefill next to a decoding request (``prefill_tokens``), are measured in
fours: with the neighbour idle, while it decodes (``streams`` long streamed requests,
each replaced when it ends), while it prefills (back-to-back requests of
``prefill_tokens`` with one output token, one more at a time than fit an iteration, so that
it never pauses) and while it spins (one 16-token request with one output token every
``SPIN_TICK_S``: between them its worker busy-polls, see
:mod:`control_plane.engine.contention`). "Idle" means idle for longer than the
neighbour's ``spin_s``: the phase waits that long after a load before measuring alone
(without the wait, an alone probe right after a load ran next to a spinning neighbour,
and the slowdowns came out low). The order within a four rotates from one repeat to the
next, so that a drift of the machine's speed cancels out. Each slowdown (the calibrated
engine's decode or prefill, the neighbour decoding, prefilling or spinning) comes from the
median over repeats of busy / idle (at least 0). A
measurement whose probe was dropped (misaligned after its retries) is skipped. The prefill
probe's iteration also decodes its background request: :meth:`NeighbourResult.with_fit`
separates the two with the fitted iteration time.

Why several neighbour states: what slows an engine depends on what its neighbour does. On the
2-core machines used here (two calibrations, medians of 7 and 15 repeats), a neighbour that
decodes (a memory-bound loop) slows this engine's decode iterations by 16-23 % and its
prefills by 7 %; one that prefills (compute-bound) by 5-8 % and 3-4 %; one that spins by
4 % each. Single repeats scatter widely (decode by decode: 1.02 to 1.33), hence the medians.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import statistics
import time
from dataclasses import dataclass, field

from control_plane.perf.base import Batch
from live.calibrate_design import Probe, prompts
from live.calibrate_metrics import parse_snapshot
from live.client import EngineClient

__all__ = ["NeighbourLoad", "NeighbourResult", "neighbour_phase"]


KINDS = ("decode", "prefill")          # this engine's work measured
LOADS = ("decode", "prefill", "spin")  # what the neighbour does meanwhile
SPIN_TICK_S = 0.4          # a spinning neighbour's request interval (at most half its spin_s)


@dataclass(frozen=True, slots=True)
class NeighbourResult:
    """``slowdown[(mine, theirs)]``: this engine's ``mine`` (decode | prefill) work takes
    that fraction longer while the neighbour does ``theirs`` (decode | prefill | spin);
    ``spin_s``: how long an idle worker spins (written with them); ``ratios``: the measured
    busy / idle ratios of the probes; ``prefill_features``: the prefill probe's iteration
    (its ratio mixes the background request's decode into the prefill, see
    :meth:`with_fit`)."""

    ratios: dict[tuple[str, str], tuple[float, ...]]
    prefill_features: tuple[float, float, float, float]
    method: str
    spin_s: float = 0.0
    slowdown: dict[tuple[str, str], float] = field(default_factory=dict)

    def with_fit(self, predictor) -> NeighbourResult:
        """The slowdowns, given the fitted iteration time: a decode probe's median ratio
        - 1; a prefill probe's iteration is ``D`` (the background request's decode) + ``P``
        (the prompt), so its ratio r = (D x f_decode + P x f_prefill) / (D + P) gives
        f_prefill = (r (D + P) - D f_decode) / P."""
        p, att, seqs, ctx = self.prefill_features
        full = predictor.iteration_s(Batch(int(p), int(att), int(seqs), int(ctx)))
        d = predictor.iteration_s(Batch(decode_seqs=int(seqs), decode_context=int(ctx)))
        out = {}
        for theirs in LOADS:
            fd = statistics.median(self.ratios[("decode", theirs)])
            r = statistics.median(self.ratios[("prefill", theirs)])
            fp = (r * full - d * fd) / (full - d) if full > d else r
            out[("decode", theirs)] = max(0.0, fd - 1.0)
            out[("prefill", theirs)] = max(0.0, fp - 1.0)
        return dataclasses.replace(self, slowdown=out)

    def meta(self) -> dict[str, str]:
        out = {f"neighbour_{mine}_slowdown_{theirs}": f"{v:.6f}"
               for (mine, theirs), v in self.slowdown.items()}
        return {**out, "neighbour_spin_s": f"{self.spin_s:g}", "neighbour_method": self.method}


class NeighbourLoad:
    """``async with NeighbourLoad(...)``: the neighbour engine decodes (``kind`` "decode":
    ``streams`` long streamed requests), prefills (``kind`` "prefill": ``streams``
    back-to-back one-token requests of ``prompt_tokens``; more than fit one iteration, so
    that one always waits) or spins (``kind`` "spin": one 16-token request with one output
    token every ``tick_s``) until the block exits (the
    connections are then closed, which makes the engine abort the requests). Entering waits
    until the load runs (decode: the engine reports the requests running; prefill: one has
    finished); RuntimeError naming the engine if it does not."""

    def __init__(self, client: EngineClient, model: str, kind: str, rng: random.Random, *,
                 streams: int = 4, prompt_tokens: int = 1024, max_tokens: int = 512,
                 tick_s: float = SPIN_TICK_S, start_timeout_s: float = 30.0) -> None:
        if kind not in LOADS:
            raise ValueError(f"kind={kind!r}: expected one of {LOADS}")
        self.client, self.model, self.kind, self.rng = client, model, kind, rng
        self.streams = 1 if kind == "spin" else streams
        self.prompt_tokens = {"decode": 64, "spin": 16}.get(kind, prompt_tokens)
        self.max_tokens = max_tokens if kind == "decode" else 1
        self.tick_s = tick_s
        self.start_timeout_s = start_timeout_s
        self._tasks: list[asyncio.Task] = []

    async def _loop(self) -> None:
        while True:
            body = {"model": self.model, "max_tokens": self.max_tokens, "ignore_eos": True,
                    "prompt": prompts(self.rng, 1, self.prompt_tokens)[0]}
            async for _ in self.client.stream("completions", body):
                pass
            if self.kind == "spin":
                await asyncio.sleep(self.tick_s)

    async def _snapshot(self):
        return parse_snapshot(await self.client.metrics_text())

    async def __aenter__(self) -> NeighbourLoad:
        s0 = await self._snapshot()
        self._tasks = [asyncio.ensure_future(self._loop()) for _ in range(self.streams)]
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            for t in self._tasks:
                if t.done():
                    with contextlib.suppress(RuntimeError):
                        await self.__aexit__(None, None, None)
                    exc = t.exception()
                    raise RuntimeError(f"neighbour engine {self.client.base_url}: its load "
                                       f"failed: {type(exc).__name__}: {exc}")
            snap = await self._snapshot()
            running = snap.values.get("running", 0.0)
            if (running >= self.streams if self.kind == "decode"
                    else snap.values["finished"] > s0.values["finished"]):
                return self
            if time.monotonic() > deadline:
                with contextlib.suppress(RuntimeError):
                    await self.__aexit__(None, None, None)
                raise RuntimeError(f"neighbour engine {self.client.base_url}: its {self.kind} "
                                   f"load did not start within {self.start_timeout_s:g} s "
                                   f"({running:.0f} requests running)")
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        """Stop the load and wait until the neighbour has let go of it (an aborted request
        may run on for an iteration; a prefill in progress ends first)."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        deadline = time.monotonic() + self.start_timeout_s
        while (await self._snapshot()).busy:
            if time.monotonic() > deadline:
                raise RuntimeError(f"neighbour engine {self.client.base_url}: still busy "
                                   f"{self.start_timeout_s:g} s after its load stopped")
            await asyncio.sleep(0.05)


async def neighbour_phase(run, neighbour: EngineClient, neighbour_model: str, *,
                          repeats: int, streams: int = 4, batch: int = 4, context: int = 128,
                          prefill_tokens: int = 1024, spin_s: float = 1.0) -> NeighbourResult:
    """Measure the slowdowns with ``run`` (the calibration's probe runner, whose engine is
    warm); ``neighbour`` serves ``neighbour_model`` on the same machine and spins for
    ``spin_s`` after its last iteration (vLLM's worker: 1 s)."""
    batch = max(1, min(batch, run.limits.max_num_seqs))
    prefill_tokens = max(16, min(prefill_tokens, run.limits.max_prompt))
    # the neighbour is configured as this engine: one more prompt than fit its iteration
    prefill_streams = run.limits.max_batched_tokens // prefill_tokens + 1
    probes = {"decode": Probe("decode", context, batch),
              "prefill": Probe("prefill", prefill_tokens)}
    states = (None, *LOADS)
    tick_s = min(SPIN_TICK_S, spin_s / 2)
    ratios: dict[tuple[str, str], list[float]] = {(m, t): [] for m in KINDS for t in LOADS}
    rng = random.Random(f"neighbour/{run.cfg.seed}/{time.time_ns()}")
    features: list[tuple[float, ...]] = []
    loaded_until = time.monotonic()   # when the neighbour last had work
    for r in range(repeats):
        for mine, p in probes.items():
            got: dict[str | None, float] = {}
            k = r % len(states)
            for theirs in states[k:] + states[:k]:
                if theirs is None:
                    idle_at = loaded_until + spin_s + 0.1
                    await asyncio.sleep(max(0.0, idle_at - time.monotonic()))
                    m, _ = await run.probe(p)
                else:
                    async with NeighbourLoad(
                            neighbour, neighbour_model, theirs, rng, prompt_tokens=prefill_tokens,
                            streams=streams if theirs == "decode" else prefill_streams,
                            tick_s=tick_s):
                        m, _ = await run.probe(p)
                    loaded_until = time.monotonic()
                if not isinstance(m, str):
                    got[theirs] = m.iteration_s
                    if mine == "prefill" and theirs is None:
                        features.append(m.features)
            for theirs in LOADS:
                if theirs in got and got.get(None, 0.0) > 0:
                    ratios[(mine, theirs)].append(got[theirs] / got[None])
        run.say(f"  neighbour repeat {r + 1}/{repeats}: " + ", ".join(
            f"{mine} x{v[-1]:.3f} while it {theirs}s" for (mine, theirs), v in ratios.items()
            if v))
    if not features:
        raise RuntimeError("neighbour phase: every prefill measurement alone was dropped")
    for key, v in ratios.items():
        if not v:
            raise RuntimeError(f"neighbour phase: every {key[0]} measurement with the "
                               f"neighbour {key[1]}-loaded was dropped")
    method = (f"{probes['decode'].label} window and {probes['prefill'].label} next to a "
              f"decoding request, alone ({spin_s:g} s after the neighbour's last work) vs "
              f"while the neighbour at {neighbour.base_url} decodes {streams} streams / "
              f"prefills {prefill_tokens}-token prompts / spins (a one-token request every "
              f"{tick_s:g} s); medians of {repeats} repeats; busy / alone: " + "; ".join(
                  f"{mine} by {theirs} {[round(x, 3) for x in v]}"
                  for (mine, theirs), v in ratios.items()))
    return NeighbourResult({k: tuple(v) for k, v in ratios.items()},
                           tuple(statistics.median(f) for f in zip(*features, strict=True)),
                           method, spin_s)
