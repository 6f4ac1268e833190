"""The parallelism planner: enumerate, estimate, rank, optionally confirm, explain.

:func:`plan` is pure (no I/O besides the perf module's packaged coefficients, no clock,
no randomness):

1. enumerate (TP, PP, DP, EP) for the budget (:func:`~.configs.enumerate_configs`);
2. estimate each analytically (:func:`~.estimate.estimate`): memory, operating batch, TTFT,
   TPOT, max rate, goodput/GPU, cost/Mtok; infeasible ones stay, with their reason;
3. rank by the objective (:mod:`~.analytic`);
4. with ``confirm(estimate, rate_per_s) -> attainment`` (e.g. a simulator run of the
   deployment at that total Poisson rate), search for each of the ``top_k`` best the highest
   rate whose attainment is >= ``attainment_target`` (:func:`~.search.search_rate`, started
   at the analytic max rate), and re-rank them by the confirmed figures::

       confirmed goodput/GPU = rate * E[O] / gpus
       confirmed cost/Mtok   = price * gpus_used / 3600 / (rate * E[O]) * 1e6

The winner's vLLM flags are in :attr:`Plan.vllm_flags`. Impossible requests raise
:class:`PlanError` saying what would be needed (GPUs, or the best achievable latency).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from control_plane.errors import ConfigError, ValidationError
from control_plane.parallelism.analytic import (
    check_objective,
    compare,
    objective_value,
    rank,
    reasons,
)
from control_plane.parallelism.configs import enumerate_configs, vllm_flags
from control_plane.parallelism.estimate import Estimate, PredictorFactory, estimate
from control_plane.parallelism.memory import estimate_memory
from control_plane.parallelism.options import PlanOptions
from control_plane.parallelism.search import RateSearch, search_rate
from control_plane.parallelism.workload import SLOTarget, WorkloadStats, format_s
from control_plane.perf.coefficients import Coefficients, load_coefficients
from control_plane.perf.hardware import GPUSpec, get_gpu
from control_plane.perf.models import ModelSpec, get_model
from control_plane.perf.parallel import ParallelConfig
from control_plane.perf.roofline import RooflinePredictor

__all__ = ["Confirm", "Plan", "PlanError", "PlanRow", "estimate_config", "min_gpus", "plan"]

Confirm = Callable[[Estimate, float], float]
"""``confirm(estimate, rate_per_s) -> SLO attainment in [0, 1]`` of the deployment
``estimate.parallel`` at a total request rate of ``rate_per_s``."""


class PlanError(ConfigError):
    """No configuration can serve the request; ``estimates`` holds what was tried."""

    def __init__(self, message: str, estimates: tuple[Estimate, ...] = ()) -> None:
        super().__init__(message)
        self.estimates = estimates


@dataclass(frozen=True, slots=True)
class PlanRow:
    """One configuration in the ranking. ``rank`` is 1-based (1 = winner); ``search`` and
    the ``confirmed_*`` figures are set for simulated candidates."""

    rank: int
    estimate: Estimate
    reason: str
    search: RateSearch | None = None
    confirmed_goodput_per_gpu: float | None = None
    confirmed_usd_per_m_tokens: float | None = None

    @property
    def config(self) -> str:
        return str(self.estimate.parallel)


@dataclass(frozen=True, slots=True)
class Plan:
    """The ranking (``rows``, winner first) and what it was computed for."""

    model: ModelSpec
    gpu: GPUSpec
    gpus: int
    gpus_per_node: int
    workload: WorkloadStats
    slo: SLOTarget
    objective: str
    options: PlanOptions
    rows: tuple[PlanRow, ...]
    confirmed: bool

    @property
    def winner(self) -> PlanRow:
        return self.rows[0]

    @property
    def configs_considered(self) -> int:
        return len(self.rows)

    @property
    def vllm_flags(self) -> list[str]:
        """``vllm serve`` arguments of the winner."""
        return vllm_flags(self.winner.estimate.parallel, self.options.gpu_memory_utilization)

    @property
    def vllm_args(self) -> str:
        return " ".join(self.vllm_flags)


def min_gpus(model: ModelSpec, gpu: GPUSpec, workload: WorkloadStats,
             options: PlanOptions | None = None, gpus_per_node: int = 8
             ) -> tuple[int, list[str]] | None:
    """(GPUs, replica shapes such as ``"tp4-pp1"``) of the smallest replica whose weights
    and KV for the longest request fit, or None if no shape (TP up to ``gpus_per_node``,
    PP up to the layer count) fits."""
    options = options or PlanOptions()
    largest = gpus_per_node * model.layers
    fits: dict[int, list[tuple[int, int]]] = {}
    for par in enumerate_configs(model, largest, gpus_per_node):
        if par.ep > 1 or (par.tp, par.pp) in fits.get(par.tp * par.pp, []):
            continue
        mem = estimate_memory(model, gpu, ParallelConfig(tp=par.tp, pp=par.pp),
                              workload.max_total_tokens, options.gpu_memory_utilization,
                              options.reserve_bytes)
        if mem.fits:
            fits.setdefault(par.tp * par.pp, []).append((par.tp, par.pp))
    if not fits:
        return None
    n = min(fits)
    return n, [f"tp{t}-pp{p}" for t, p in sorted(fits[n], key=lambda s: (-s[0], s[1]))]


def _budget_error(model, gpu, gpus, gpus_per_node, workload, options, ests) -> PlanError:
    need = min_gpus(model, gpu, workload, options, gpus_per_node)
    what = (f"weights + KV for the longest request ({workload.max_total_tokens:,} tokens) at "
            f"gpu_memory_utilization {options.gpu_memory_utilization:g}")
    gb = f"{gpu.memory_bytes / 1e9:.0f} GB"
    roomiest = max(ests, key=lambda e: (e.memory.kv_tokens, -e.memory.weights_bytes_per_gpu))
    detail = f"; the roomiest config tried ({roomiest.parallel}): {roomiest.reason}"
    if need is None:
        msg = (f"{model.name} does not fit on any replica of {gpu.name} ({gb}) for {what}, "
               f"even TP {gpus_per_node} x PP {model.layers}; budget is {gpus}")
    else:
        msg = (f"{model.name} needs at least {need[0]} x {gpu.name} ({gb}) for {what} "
               f"({' or '.join(need[1])}); budget is {gpus}")
    return PlanError(msg + detail, tuple(ests))


def _slo_error(model, gpu, gpus, slo, ests) -> PlanError:
    fit = [e for e in ests if e.memory.fits]
    tpot = min(fit, key=lambda e: e.tpot_min_s)
    ttft = min(fit, key=lambda e: e.ttft_min_s)
    return PlanError(
        f"no configuration of {gpus} x {gpu.name} meets {slo.describe()} for {model.name}: "
        f"the best achievable TPOT is {format_s(tpot.tpot_min_s)} ({tpot.parallel}, "
        f"batch 1), the best TTFT {format_s(ttft.ttft_min_s)} ({ttft.parallel}, "
        f"p{slo.percentile:g} prompt of {ttft.ttft_prompt_tokens} tokens); relax the SLO "
        "or use faster GPUs", tuple(ests))


def _default_predictor(model, gpu, options, gpus_per_node, coeffs) -> PredictorFactory:
    coeffs = coeffs or load_coefficients()

    def make(par):
        return RooflinePredictor(model, gpu, par, coeffs, interconnect=options.interconnect,
                                 gpus_per_node=gpus_per_node)
    return make


def estimate_config(model: ModelSpec | str, gpu: GPUSpec | str, parallel: ParallelConfig,
                    workload_stats: WorkloadStats | object | None = None,
                    slo: SLOTarget | None = None, options: PlanOptions | None = None,
                    gpus_per_node: int = 8, coeffs: Coefficients | None = None) -> Estimate:
    """The analytic :class:`Estimate` of one configuration (budget = its GPUs), with the
    roofline predictor and :func:`plan`'s defaults."""
    model, gpu = get_model(model), get_gpu(gpu)
    workload = WorkloadStats.fixed() if workload_stats is None else WorkloadStats.of(
        workload_stats)
    options = options or PlanOptions()
    make = _default_predictor(model, gpu, options, gpus_per_node, coeffs)
    return estimate(model, gpu, parallel, parallel.total_gpus, workload, slo or SLOTarget(),
                    make, options)


def plan(model: ModelSpec | str, gpu: GPUSpec | str, gpus: int, gpus_per_node: int = 8,
         workload_stats: WorkloadStats | object | None = None, slo: SLOTarget | None = None,
         objective: str = "goodput", top_k: int = 3, confirm: Confirm | None = None,
         attainment_target: float = 0.99, options: PlanOptions | None = None,
         predictor: PredictorFactory | None = None, coeffs: Coefficients | None = None,
         max_evals: int = 10) -> Plan:
    """Plan the parallelism of ``model`` on ``gpus`` x ``gpu`` (see the module docstring).

    ``workload_stats``: a :class:`WorkloadStats`, or any object with ``prompt_tokens`` and
    ``output_tokens`` arrays (a trace); default fixed 1024-token prompts and 256-token
    outputs. ``slo`` defaults to no latency constraint; ``predictor`` (``ParallelConfig ->
    IterationPredictor``) to the roofline with ``coeffs``; ``max_evals``: simulator runs per
    confirmed candidate."""
    model, gpu = get_model(model), get_gpu(gpu)
    check_objective(objective)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValidationError("plan", "top_k", top_k, "must be an integer >= 1")
    if not 0 < attainment_target <= 1:
        raise ValidationError("plan", "attainment_target", attainment_target,
                              "must be in (0, 1]")
    workload = WorkloadStats.fixed() if workload_stats is None else WorkloadStats.of(
        workload_stats)
    slo = slo or SLOTarget()
    options = options or PlanOptions()
    if options.interconnect == "nvlink" and not gpu.has_nvlink:
        raise ConfigError(f"interconnect 'nvlink' but {gpu.name} has no NVLink")
    predictor = predictor or _default_predictor(model, gpu, options, gpus_per_node, coeffs)

    ests = [estimate(model, gpu, par, gpus, workload, slo, predictor, options)
            for par in enumerate_configs(model, gpus, gpus_per_node)]
    if not any(e.memory.fits for e in ests):
        raise _budget_error(model, gpu, gpus, gpus_per_node, workload, options, ests)
    if not any(e.feasible for e in ests):
        raise _slo_error(model, gpu, gpus, slo, ests)
    ranked = rank(ests, objective)
    if confirm is None:
        rows = tuple(PlanRow(i + 1, e, r) for i, (e, r) in
                     enumerate(zip(ranked, reasons(ranked, objective), strict=True)))
    else:
        rows = _confirmed_rows(ranked, objective, top_k, confirm, attainment_target,
                               workload, gpu, options, max_evals, slo, gpus, model)
    return Plan(model, gpu, gpus, gpus_per_node, workload, slo, objective, options, rows,
                confirm is not None)


def _confirmed_rows(ranked, objective, top_k, confirm, target, workload, gpu, options,
                    max_evals, slo, gpus, model) -> tuple[PlanRow, ...]:
    price = (gpu.price_per_hour_usd if options.price_per_gpu_hour is None
             else options.price_per_gpu_hour)
    feasible = [e for e in ranked if e.feasible]
    top, rest = feasible[:top_k], feasible[top_k:]
    done = []
    for i, e in enumerate(top):
        s = search_rate(lambda r, e=e: confirm(e, r), e.rate_per_s, target,
                        max_evals=max_evals)
        tokens = s.rate_per_s * workload.output_mean
        good = tokens / e.gpus
        cost = price * e.gpus_used / 3600.0 / tokens * 1e6 if tokens > 0 else float("inf")
        done.append((-objective_value(good, cost, objective), i, e, s, good, cost))
    done.sort(key=lambda t: (t[0], t[1]))
    if not done[0][3].rate_per_s > 0:
        raise PlanError(
            f"no candidate reaches {target:.0%} SLO attainment ({slo.describe()}) for "
            f"{model.name} on {gpus} x {gpu.name} in simulation at any rate tried (down to "
            f"1/32 of the analytic estimate): relax the SLO or add GPUs", tuple(ranked))
    _, _, best, _, bgood, bcost = done[0]
    rows = []
    p = f"{target:.0%} attainment"
    for _, _, e, s, good, cost in done:
        if e is best:
            why = f"winner (simulated: {s.rate_per_s:.3g} req/s at {p})"
        elif s.rate_per_s <= 0:
            why = f"misses {p} at every simulated rate tried"
        else:
            v, b = (good, bgood) if objective == "goodput" else (cost, bcost)
            why = compare(v, b, objective) + " (simulated)"
        rows.append(PlanRow(len(rows) + 1, e, why, s, good, cost))
    top1 = feasible[0]
    for e in rest:
        v, b = ((e.goodput_per_gpu, top1.goodput_per_gpu) if objective == "goodput"
                else (e.usd_per_m_tokens, top1.usd_per_m_tokens))
        rows.append(PlanRow(len(rows) + 1, e, f"not simulated (outside the top {top_k}): "
                            + compare(v, b, objective, "the analytic best")))
    for e in ranked:
        if not e.feasible:
            rows.append(PlanRow(len(rows) + 1, e, f"infeasible: {e.reason}"))
    return tuple(rows)
