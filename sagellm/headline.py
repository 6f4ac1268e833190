"""Headline results: the load each policy / router pair sustains at an SLO-attainment target.

For one workload on one cluster (a :class:`Study`), with loads as fractions of the cluster's
estimated capacity (:mod:`sagellm.capacity`) and every run a :mod:`sagellm.compare` run
(same run files and keys: ``sagellm compare --report-only --out WORK`` reads them too):

1. **Knee.** The load where the baseline pair (fifo / round_robin) falls below
   ``knee_target`` attainment: the load ``grid``, then ``knee_rounds`` rounds of k-section
   (``per_round`` new loads per round, evenly inside the bracket) between the highest load
   that still passes and the first that fails. The knee is that first failing load. The
   lowest grid load is the *near-idle* load; the baseline's attainment there is its
   *ceiling*. When the ceiling is already below ``knee_target`` (SLOs that some requests
   miss even on an idle cluster), the knee target becomes ``ceiling - knee_drop`` (stated
   in the report).
2. **All pairs at the knee**, ranked by attainment, then goodput, then lower p99 e2e.
3. **Finalists.** The baseline, the best pair with the baseline's policy (the router's gain
   alone), the baseline with the TPOT admission gate when the study has gated pairs (the
   gate's gain alone; :class:`Pair`), and pairs in rank order, skipping pairs whose figures
   at the knee equal those of a pair already taken (e.g. ``priority`` and ``slo`` when they
   take the same decisions), ``finalists`` pairs in all.
4. **Goodput at the goal target.** Per finalist, the highest load at which attainment is
   still >= ``goal_target`` (the grid, extended down to ``min_load`` / up to ``max_load``
   until the target is bracketed, then ``goal_rounds`` rounds of bisection), and its ratio to
   the baseline's. Where the baseline's ceiling is below the goal target the ratio is
   undefined; then a *secondary* target, the ceiling minus ``secondary_drop`` rounded down
   to a whole percent, is searched the same way and labelled as such.

The searches assume attainment falls with load; when it does not, the first failure counts
(the highest load is taken below it), so a reported load is one the pair sustains at every
grid point beneath it. The search is :mod:`sagellm.headline_search`; figures beyond the
standard summary, :mod:`sagellm.headline_figures`; the report, :mod:`sagellm.headline_report`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from control_plane import ConfigError, ControlPlaneConfig
from sagellm.capacity import cluster_capacity_rps
from sagellm.compare_exec import execute
from sagellm.compare_grid import ClusterChoice, Grid, RunSpec, expand
from sagellm.compare_store import RUNS_DIR, read_run, run_meta, summary_row
from sagellm.compare_workload import WorkloadChoice, prepare_workload
from sagellm.headline_figures import isolated_ttft_miss, run_extras
from sagellm.headline_search import DIGITS as _DIGITS
from sagellm.headline_search import Evaluate, Threshold, bracket, interior, search

__all__ = ["Pair", "Study", "StudyResult", "Threshold", "bracket", "interior", "pick_finalists",
           "rank", "ratio_of", "run_study", "search", "short_name"]


# -- pairs and studies ---------------------------------------------------------------------
def short_name(spec: object) -> str:
    """A policy / router spec's name for tables: a pipeline's ``name`` parameter, else its
    type (parameters are listed once in the report's setup)."""
    if isinstance(spec, Mapping):
        params = spec.get("params") or {}
        if spec.get("type") == "pipeline" and isinstance(params, Mapping) and params.get("name"):
            return str(params["name"])
        return str(spec.get("type"))
    return str(spec)


@dataclass(frozen=True)
class Pair:
    """A policy spec and a router spec, named ``"<policy> / <router>"``, and the TPOT
    admission gate the run's control plane uses (``ControlPlaneConfig.tpot_gate``; None:
    off, as in the cluster's own settings), marked ``+gate`` after the policy's name."""

    policy: Any
    router: Any
    gate: float | None = None

    @property
    def policy_label(self) -> str:
        name = short_name(self.policy)
        return name if self.gate is None else f"{name}+gate"

    @property
    def label(self) -> str:
        return f"{self.policy_label} / {short_name(self.router)}"

    def cluster(self, cluster: ClusterChoice) -> ClusterChoice:
        """``cluster`` with this pair's gate in its control-plane settings (and name)."""
        if self.gate is None:
            return cluster
        return dataclasses.replace(
            cluster, name=f"{cluster.name}+gate{self.gate:g}",
            control=dataclasses.replace(cluster.control, tpot_gate=self.gate))


@dataclass(frozen=True)
class Study:
    """One workload on one cluster: the pairs to compare and the search settings (module
    doc). ``sensitivity_targets``: further targets searched for the finalists (those the
    baseline's ceiling reaches), to show how much the ratio depends on the target.
    ``seeds``: further workload seeds (class draws, router randomness) on which the baseline,
    the best pair at the knee and the pair with the best ratio repeat the goal (or
    secondary) search. ``check_cluster``: optional second cluster on which the baseline and
    the best pair are rerun at the knee and at their goal loads (e.g. a finer modelling
    setting). ``variants``: (description, cluster) deployment variants on which the baseline
    and every policy with the best pair's router (and gate) run at the knee (not part of
    the answer: they show what a setting outside the policies and routers would change).
    ``gates``: the TPOT admission gate settings every policy x router pair is run with
    (None: off; see :class:`Pair`); with a gate, the baseline's policy and router with the
    first gate is a finalist too (the gate's gain alone)."""

    name: str
    title: str
    workload: WorkloadChoice
    cluster: ClusterChoice
    policies: tuple
    routers: tuple
    baseline: Pair = Pair("fifo", "round_robin")
    grid: tuple[float, ...] = (0.05, 0.3, 0.6, 0.9, 1.2)
    knee_target: float = 0.90
    knee_drop: float = 0.10
    goal_target: float = 0.99
    secondary_drop: float = 0.05
    knee_rounds: int = 3
    goal_rounds: int = 4
    per_round: int = 2
    finalists: int = 5
    min_load: float = 0.02
    max_load: float = 3.0
    sensitivity_targets: tuple[float, ...] = (0.95, 0.98, 0.995)
    seeds: tuple[int, ...] = ()
    check_cluster: ClusterChoice | None = None
    variants: tuple[tuple[str, ClusterChoice], ...] = ()
    gates: tuple[float | None, ...] = (None,)
    notes: tuple[str, ...] = ()

    def pairs(self) -> list[Pair]:
        return [Pair(p, r, g) for g in self.gates for p in self.policies for r in self.routers]

    def policy_labels(self) -> list[str]:
        """Every pair's policy label (``priority``, ``priority+gate``), in pair order."""
        return list(dict.fromkeys(p.policy_label for p in self.pairs()))

    def gate_alone(self) -> Pair | None:
        """The baseline's policy and router with the first gate of ``gates``, if any."""
        gate = next((g for g in self.gates if g is not None), None)
        if gate is None:
            return None
        return Pair(self.baseline.policy, self.baseline.router, gate)

    def validate(self) -> Study:
        labels = [p.label for p in self.pairs()]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ConfigError(f"{self.name}: pairs with the same name {dup}")
        if self.baseline.label not in labels:
            raise ConfigError(f"{self.name}: baseline {self.baseline.label} is not a pair")
        for g in self.gates:
            if g is not None:
                ControlPlaneConfig(tpot_gate=g)  # raises ConfigError naming tpot_gate
        if sorted(self.grid) != list(self.grid) or not self.grid or self.grid[0] <= 0:
            raise ConfigError(f"{self.name}: grid must be increasing loads > 0")
        for t in (self.knee_target, self.goal_target):
            if not 0 < t <= 1:
                raise ConfigError(f"{self.name}: targets must be in (0, 1]")
        return self


class Runner:
    """Runs (pair, load) points of one workload on one cluster as :mod:`sagellm.compare`
    runs in ``out_dir/runs`` (existing complete files are reused) and caches their summary
    rows (:func:`sagellm.compare_store.summary_row` plus the pair, the stage that first
    asked for the point and :func:`_extras`)."""

    def __init__(self, study: Study, cluster: ClusterChoice, out_dir: str | Path, *,
                 workers: int | None = None, progress: bool = False) -> None:
        self.study = study
        self.cluster = cluster
        self.out = Path(out_dir)
        self.workers = workers
        self.progress = progress
        self.prepared = prepare_workload(study.workload)
        self.rows: dict[tuple[str, float], dict[str, Any]] = {}
        self.runs = 0  # simulations run here (not reused from files)
        trace = self.prepared.trace
        self.capacity_rps = cluster_capacity_rps(cluster.instances, trace.prompt_tokens,
                                                 trace.output_tokens)

    def same_rate(self, other: Runner, load: float) -> float:
        """The load on this runner's cluster that offers the request rate ``load`` offers
        on ``other``'s (loads are fractions of each cluster's own estimated capacity)."""
        return round(load * other.capacity_rps / self.capacity_rps, _DIGITS)

    def _spec(self, pair: Pair, load: float) -> RunSpec:
        grid = Grid(self.study.workload, (pair.policy,), (pair.router,), (load,),
                    (pair.cluster(self.cluster),))
        (spec,) = expand(grid, self.prepared)
        return spec

    def run(self, points: Iterable[tuple[Pair, float]], stage: str) -> list[dict[str, Any]]:
        """Summary rows of ``points`` (in order), running the missing ones together."""
        points = [(p, round(float(x), _DIGITS)) for p, x in points]
        new = list(dict.fromkeys((p.label, x) for p, x in points
                                 if (p.label, x) not in self.rows))
        by_label = {p.label: p for p, _ in points}
        specs = {key: self._spec(by_label[key[0]], key[1]) for key in new}
        paths = {key: self.out / RUNS_DIR / f"{s.name}.parquet" for key, s in specs.items()}
        todo = [(specs[k], paths[k]) for k in new if run_meta(paths[k], specs[k].key) is None]
        execute(todo, workers=self.workers, progress=self.progress,
                skipped=len(new) - len(todo))
        self.runs += len(todo)
        for key in new:
            df, meta = read_run(paths[key])
            pair = by_label[key[0]]
            self.rows[key] = {"study": self.study.name, "cluster_name": self.cluster.name,
                              "pair": pair.label, "policy_name": pair.policy_label,
                              "router_name": short_name(pair.router), "gate": pair.gate,
                              "stage": stage,
                              **summary_row(df, meta), **run_extras(df)}
        return [self.rows[(p.label, x)] for p, x in points]

    def evaluator(self, pairs: Mapping[str, Pair], stage: str) -> Evaluate:
        def evaluate(todo: list[tuple[str, float]]) -> dict[tuple[str, float], float]:
            rows = self.run([(pairs[k], x) for k, x in todo], stage)
            return {(k, x): float(r["slo_attainment"]) for (k, x), r in zip(todo, rows,
                                                                             strict=True)}
        return evaluate

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.rows.values()))


# -- a study ------------------------------------------------------------------------------
_FIGURES = ("slo_attainment", "goodput_rps", "ttft_p99_s", "e2e_p99_s", "rejected")


def rank(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows best first: attainment, then goodput (both higher), then p99 e2e (lower), then
    the given order."""
    r = rows.assign(_a=rows["slo_attainment"].fillna(-1.0), _g=rows["goodput_rps"].fillna(-1.0),
                    _e=rows["e2e_p99_s"].fillna(math.inf), _o=range(len(rows)))
    r = r.sort_values(["_a", "_g", "_e", "_o"], ascending=[False, False, True, True],
                      kind="stable")
    return r.drop(columns=["_a", "_g", "_e", "_o"]).reset_index(drop=True)


def _figures(row: Mapping[str, Any]) -> tuple:
    return tuple(round(float(row[c]), 9) for c in _FIGURES)


def pick_finalists(ranked: pd.DataFrame, baseline: str, baseline_policy: str, n: int,
                   also: Iterable[str] = ()) -> list[str]:
    """The baseline, the best pair with the baseline's policy, the pairs ``also`` (e.g.
    the baseline with the TPOT gate), then pairs in rank order whose figures differ from
    every pair taken, ``n`` in all (see the module doc)."""
    out = [baseline]
    same = ranked[ranked["policy_name"] == baseline_policy]
    if len(same) and same.iloc[0]["pair"] != baseline:
        out.append(str(same.iloc[0]["pair"]))
    out += [p for p in also if p not in out and p in set(ranked["pair"])]
    taken = {_figures(r) for _, r in ranked[ranked["pair"].isin(out)].iterrows()}
    for _, r in ranked.iterrows():
        if len(out) >= n:
            break
        f = _figures(r)
        if r["pair"] in out or f in taken:
            continue
        out.append(str(r["pair"]))
        taken.add(f)
    return out


@dataclass
class StudyResult:
    """Everything a report needs about one study (see :func:`run_study`)."""

    study: Study
    capacity_rps: float
    trace_rate_rps: float
    requests: int
    ceiling: float  # the baseline's attainment at the near-idle load (the lowest grid load)
    knee_target: float  # the target the knee was searched for (see the module doc)
    knee: Threshold
    knee_load: float
    at_knee: pd.DataFrame  # every pair at the knee, ranked
    finalists: list[str]
    goal: dict[str, Threshold]
    secondary_target: float | None
    secondary: dict[str, Threshold]
    rows: pd.DataFrame  # every run of the study
    check_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    runs: int = 0
    # per priority level: share of requests whose prompt alone takes longer than their TTFT
    # SLO at the fastest instance's nominal prefill speed (a lower bound on what no
    # scheduling can save)
    isolated_miss: dict[int, float] = field(default_factory=dict)
    sensitivity: dict[float, dict[str, Threshold]] = field(default_factory=dict)
    seed_checks: list[tuple[int, float, dict[str, Threshold]]] = field(default_factory=list)
    variant_rows: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def best(self) -> str:
        """The best pair at the knee."""
        return str(self.at_knee.iloc[0]["pair"])

    @property
    def main(self) -> tuple[float, dict[str, Threshold]]:
        """(target, thresholds) of the ratio that answers the question: the goal target's,
        or the secondary target's when the baseline never reaches the goal."""
        if self.secondary_target is not None and self.ratio(self.best) is None:
            return self.secondary_target, self.secondary
        return self.study.goal_target, self.goal

    @property
    def best_ratio(self) -> str | None:
        """The finalist with the largest ratio at the main target (the best at the knee
        on a tie), None when no ratio is defined."""
        table = self.main[1]
        got = [(ratio_of(table, self.study.baseline.label, p), p == self.best, p)
               for p in self.finalists]
        got = [g for g in got if g[0] is not None]
        return max(got)[2] if got else None

    @property
    def main_rows(self) -> pd.DataFrame:
        """The runs with the study's own seed (without the seed checks' runs)."""
        return self.rows[self.rows["seed"] == self.study.workload.seed]

    def row(self, pair: str, load: float | None) -> dict[str, Any] | None:
        if load is None:
            return None
        rows = self.main_rows
        hit = rows[(rows["pair"] == pair) & np.isclose(rows["load"], load)]
        return None if hit.empty else hit.iloc[0].to_dict()

    def ratio(self, pair: str, secondary: bool = False) -> float | None:
        """The pair's highest load at the (goal or secondary) target over the baseline's."""
        table = self.secondary if secondary else self.goal
        return ratio_of(table, self.study.baseline.label, pair)


def ratio_of(table: Mapping[str, Threshold], baseline: str, pair: str) -> float | None:
    """``pair``'s highest passing load over ``baseline``'s (None when either has none)."""
    base = table.get(baseline)
    mine = table.get(pair)
    if base is None or mine is None or not base.passed or mine.passed is None:
        return None
    return mine.passed / base.passed


def run_study(study: Study, work_dir: str | Path, *, workers: int | None = None,
              progress: bool = False, log: Callable[[str], None] = lambda _: None
              ) -> StudyResult:
    """Run the four steps of the module doc for ``study``; run files go to ``work_dir``."""
    study.validate()
    runner = Runner(study, study.cluster, work_dir, workers=workers, progress=progress)
    pairs = {p.label: p for p in study.pairs()}
    base = study.baseline.label
    common = {"min_load": study.min_load, "max_load": study.max_load}

    log(f"{study.name}: knee search for {base}")
    evaluate = runner.evaluator(pairs, "knee search")
    knee = search(evaluate, [base], study.knee_target, study.grid, rounds=study.knee_rounds,
                  per_round=study.per_round, **common)[base]
    ceiling = dict(knee.points)[round(study.grid[0], _DIGITS)]
    knee_target = study.knee_target
    if ceiling < knee_target:
        knee_target = max(0.01, ceiling - study.knee_drop)
        knee = search(evaluate, [base], knee_target, study.grid, rounds=study.knee_rounds,
                      per_round=study.per_round, **common)[base]
    knee_load = knee.failed if knee.failed is not None else knee.points[-1][0]

    log(f"{study.name}: {len(pairs)} pairs at the knee, load {knee_load:g}")
    at_knee = rank(pd.DataFrame(runner.run([(p, knee_load) for p in pairs.values()],
                                           "all pairs at the knee")))
    gate_alone = study.gate_alone()
    finalists = pick_finalists(at_knee, base, study.baseline.policy_label, study.finalists,
                               [gate_alone.label] if gate_alone else [])

    log(f"{study.name}: goal search for {len(finalists)} finalists")
    evaluate = runner.evaluator(pairs, "goal search")
    goal = search(evaluate, finalists, study.goal_target, study.grid,
                  rounds=study.goal_rounds, per_round=1, **common)
    secondary_target = None
    secondary: dict[str, Threshold] = {}
    if ceiling < study.goal_target:
        secondary_target = math.floor((ceiling - study.secondary_drop) * 100) / 100
        log(f"{study.name}: secondary search at {secondary_target:.0%}")
        secondary = search(runner.evaluator(pairs, "secondary search"), finalists,
                           secondary_target, study.grid, rounds=study.goal_rounds,
                           per_round=1, **common)

    sensitivity = {}
    for t in study.sensitivity_targets:
        if t <= ceiling and t != study.goal_target:
            log(f"{study.name}: sensitivity search at {t:.1%}")
            sensitivity[t] = search(runner.evaluator(pairs, f"sensitivity {t:.1%}"),
                                    finalists, t, study.grid, rounds=study.goal_rounds,
                                    per_round=1, **common)

    result = StudyResult(study, _capacity(runner),
                         runner.prepared.rate_rps, len(runner.prepared.trace), ceiling,
                         knee_target, knee, knee_load, at_knee, finalists, goal,
                         secondary_target, secondary, pd.DataFrame())
    if study.check_cluster is not None:
        log(f"{study.name}: rerun on {study.check_cluster.name}")
        checker = Runner(study, study.check_cluster, work_dir, workers=workers,
                         progress=progress)
        points = [(pairs[base], knee_load), (pairs[result.best], knee_load)]
        for table in (goal, secondary):
            for label in (base, result.best):
                t = table.get(label)
                if t is not None and t.passed is not None:
                    points.append((pairs[label], t.passed))
        points = list(dict.fromkeys((p.label, x) for p, x in points))
        rows = checker.run([(pairs[k], checker.same_rate(runner, x)) for k, x in points],
                           "check")
        result.check_rows = pd.DataFrame(rows).assign(study_load=[x for _, x in points])
        runner.runs += checker.runs
    result.sensitivity = sensitivity
    target, _ = result.main
    for seed in study.seeds:
        log(f"{study.name}: seed {seed}")
        seeded = dataclasses.replace(study, workload=dataclasses.replace(study.workload,
                                                                         seed=seed))
        other = Runner(seeded, study.cluster, work_dir, workers=workers, progress=progress)
        keys = list(dict.fromkeys(k for k in (base, result.best, result.best_ratio) if k))
        got = search(other.evaluator(pairs, f"seed {seed}"), keys, target, study.grid,
                     rounds=study.goal_rounds, per_round=1, **common)
        result.seed_checks.append((seed, target, got))
        runner.runs += other.runs
        runner.rows.update({(f"seed{seed}", *k): v for k, v in other.rows.items()})
    frames = []
    for text, cluster in study.variants:
        log(f"{study.name}: variant {cluster.name}")
        other = Runner(study, cluster, work_dir, workers=workers, progress=progress)
        router, gate = pairs[result.best].router, pairs[result.best].gate
        load = other.same_rate(runner, knee_load)
        points = [(pairs[base], load)] + [
            (Pair(p, router, gate), load) for p in study.policies
            if Pair(p, router, gate).label != base]
        frames.append(pd.DataFrame(other.run(points, "variant")).assign(variant=text))
        runner.runs += other.runs
    if frames:
        result.variant_rows = pd.concat(frames, ignore_index=True)
    result.rows = runner.frame()
    result.runs = runner.runs
    result.isolated_miss = isolated_ttft_miss(runner.prepared.trace, study.cluster)
    return result


def _capacity(runner: Runner) -> float:
    return float(next(iter(runner.rows.values()))["capacity_rps"])
