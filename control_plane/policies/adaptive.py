"""Adaptive scheduling: switch among queue policies as load and SLO attainment change.

The adaptive policy owns one instance of each configured inner policy (default ``fifo``,
``priority``, ``slo``, ``cost``, built from the policy registry with their own params) and
delegates every queue operation (``push`` / ``peek`` / ``pop`` / ``remove`` / ``drain`` /
``len``) and the decision hooks (``admit``, ``candidates``, ``shed``) to the *active* one.
``preempt_queued`` and ``restricts_candidates`` are read from the active policy, so the
manager must read them each time (it does). The bookkeeping hooks (``on_dispatch``,
``on_retry``, ``on_finish``, ``on_reject``) go to every inner policy that overrides them,
whether active or not, so ledgers such as ``cost``'s tenant spend stay right across switches;
the policies that do not override a hook are skipped (worked out once, at construction).

Signals, evaluated in ``tick`` (cheap: O(1) apart from a cached capacity sum):

- ``load`` = queued requests / total ``max_inflight`` of the routable instances;
- ``utilisation`` = in-flight / that capacity (reported in causes only);
- ``attainment`` = the fraction of the last ``window`` finished requests *with an SLO* that
  met it (``SLO.met`` on the outcome's measured TTFT / e2e, TPOT derived from them); a
  failed request counts as a miss, one lacking a measurement its SLO constrains is not
  counted; None until ``min_samples`` samples exist;
- SLO traffic: an SLO request is among the last ``window`` finished requests;
- mixed priorities: queued requests on two or more priority levels.

Rules, first match wins (a target that is not configured is skipped):

1. attainment < ``attainment_low`` -> ``slo``;
2. load > ``load_high`` and SLO traffic -> ``slo``; load > ``load_high``, no SLO traffic and
   mixed priorities -> ``priority`` (with neither, EDF and priority would both be FIFO, so the
   policy stays);
3. load < ``load_low`` and (attainment > ``attainment_high`` or unknown) -> ``base_policy``
   (``fifo`` by default; ``cost`` saves money when the cluster is calm);
4. otherwise stay. The gaps between the low and high thresholds and a minimum dwell of
   ``min_dwell_s`` seconds between switches are the hysteresis that prevents flapping.

A switch drains the old policy (arrival order) into the new one, so no queued request is lost
or duplicated, is appended to ``switches`` as a :class:`PolicySwitch` whose cause names the
signal values, and is returned from ``tick`` for the manager to pass on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from control_plane.actions import Outcome, PolicySwitch, RejectCause
from control_plane.policies._params import check_int, check_number
from control_plane.policies.base import QueuePolicy, Shed
from control_plane.registry import Registry, parse_spec
from control_plane.types import ClusterView, InstanceView, Request

__all__ = ["AdaptivePolicy"]

_HOOKS = ("on_dispatch", "on_retry", "on_finish", "on_reject")


def _slo_met(request: Request, outcome: Outcome | None) -> bool | None:
    """Whether the finished request met its SLO; None when a constrained latency is unknown.

    A failed request missed it. TPOT is derived as (e2e - TTFT) / (outputs - 1).
    """
    if outcome is None:
        return None
    if not outcome.ok:
        return False
    ttft, e2e = outcome.ttft_s, outcome.e2e_s
    slo = request.slo
    tpot = None
    if ttft is not None and e2e is not None:
        n = outcome.output_tokens or request.expected_output_tokens
        tpot = (e2e - ttft) / (n - 1) if n > 1 else 0.0
    for bound, got in ((slo.ttft_s, ttft), (slo.tpot_s, tpot), (slo.e2e_s, e2e)):
        if bound is not None and got is None:
            return None
    return slo.met(ttft, tpot, e2e)


class AdaptivePolicy(QueuePolicy):
    """Switches the active inner policy on load / SLO-attainment signals, with hysteresis."""

    name = "adaptive"

    def __init__(self, policies: Sequence[object] = ("fifo", "priority", "slo", "cost"),
                 base_policy: str = "fifo", window: int = 200, min_samples: int = 20,
                 attainment_low: float = 0.90, attainment_high: float = 0.95,
                 load_high: float = 1.0, load_low: float = 0.25, min_dwell_s: float = 30.0,
                 registry: Registry[QueuePolicy] | None = None) -> None:
        if registry is None:
            from control_plane.policies import POLICIES  # lazy: import cycle
            registry = POLICIES
        if isinstance(policies, (str, bytes)) or not isinstance(policies, Sequence) or (
                not policies):
            raise ValueError(f"adaptive: parameter policies={policies!r} must be a non-empty "
                             "list of policy names or {type, params} specs")
        self._inners: dict[str, QueuePolicy] = {}
        for spec in policies:
            pname, _ = parse_spec(spec, "policies")
            if pname == self.name:
                raise ValueError(f"adaptive: parameter policies={policies!r} must not "
                                 "contain 'adaptive'")
            if pname in self._inners:
                raise ValueError(f"adaptive: parameter policies={policies!r} names "
                                 f"{pname!r} twice")
            self._inners[pname] = registry.create(spec, registry=registry)
        if base_policy not in self._inners:
            raise ValueError(f"adaptive: parameter base_policy={base_policy!r} is not one of "
                             f"the configured policies {list(self._inners)}")
        self.base_policy = base_policy
        self.window = check_int("adaptive", "window", window, minimum=1)
        self.min_samples = check_int("adaptive", "min_samples", min_samples, minimum=1)
        if self.min_samples > self.window:
            raise ValueError(f"adaptive: parameter min_samples={min_samples!r} must be <= "
                             f"window={window!r}")
        self.attainment_low = check_number("adaptive", "attainment_low", attainment_low,
                                           minimum=0.0, maximum=1.0)
        self.attainment_high = check_number("adaptive", "attainment_high", attainment_high,
                                            minimum=0.0, maximum=1.0)
        if self.attainment_low > self.attainment_high:
            raise ValueError(f"adaptive: parameter attainment_low={attainment_low!r} must be "
                             f"<= attainment_high={attainment_high!r}")
        self.load_low = check_number("adaptive", "load_low", load_low, minimum=0.0)
        self.load_high = check_number("adaptive", "load_high", load_high, minimum=0.0)
        if self.load_low >= self.load_high:
            raise ValueError(f"adaptive: parameter load_low={load_low!r} must be < "
                             f"load_high={load_high!r}")
        self.min_dwell_s = check_number("adaptive", "min_dwell_s", min_dwell_s, minimum=0.0)

        self._listeners = {
            hook: tuple(p for p in self._inners.values()
                        if getattr(type(p), hook, None) is not getattr(QueuePolicy, hook))
            for hook in _HOOKS}
        self._active = base_policy
        self._cur = self._inners[base_policy]
        self.switches: list[PolicySwitch] = []
        self._last_switch_s: float | None = None
        self._samples: deque[bool] = deque(maxlen=self.window)
        self._met = 0
        self._since_slo = self.window  # finished requests since the last one with an SLO
        self._cap_for: tuple | None = None
        self._cap = 0

    # -- delegation -------------------------------------------------------------------
    @property
    def active(self) -> str:
        return self._active

    @property
    def preempt_queued(self) -> bool:  # type: ignore[override]
        return self._cur.preempt_queued

    @property
    def restricts_candidates(self) -> bool:  # type: ignore[override]
        return self._cur.restricts_candidates

    def inner(self, name: str) -> QueuePolicy:
        """The configured inner policy called ``name`` (for inspection)."""
        return self._inners[name]

    @property
    def policies(self) -> tuple[str, ...]:
        return tuple(self._inners)

    def push(self, request: Request, now: float) -> None:
        self._cur.push(request, now)

    def peek(self) -> Request | None:
        return self._cur.peek()

    def pop(self) -> Request:
        return self._cur.pop()

    def remove(self, request_id: str) -> bool:
        return self._cur.remove(request_id)

    def __len__(self) -> int:
        return len(self._cur)

    def drain(self) -> list[Request]:
        return self._cur.drain()

    def admit(self, request: Request, cluster: ClusterView,
              now: float) -> tuple[RejectCause, str] | None:
        return self._cur.admit(request, cluster, now)

    def candidates(self, request: Request, candidates: Sequence[InstanceView],
                   cluster: ClusterView, now: float) -> Sequence[InstanceView]:
        return self._cur.candidates(request, candidates, cluster, now)

    def shed(self, now: float, cluster: ClusterView) -> list[Shed]:
        return self._cur.shed(now, cluster)

    def on_dispatch(self, request: Request, instance: InstanceView, now: float) -> None:
        for p in self._listeners["on_dispatch"]:
            p.on_dispatch(request, instance, now)

    def on_retry(self, request: Request, instance: InstanceView, now: float) -> None:
        for p in self._listeners["on_retry"]:
            p.on_retry(request, instance, now)

    def on_reject(self, request: Request, cause: RejectCause, now: float) -> None:
        for p in self._listeners["on_reject"]:
            p.on_reject(request, cause, now)

    def on_finish(self, request: Request, instance: InstanceView, outcome: Outcome,
                  now: float) -> None:
        if request.slo is None:
            self._since_slo += 1
        else:
            self._since_slo = 0
            met = _slo_met(request, outcome)
            if met is not None:
                s = self._samples
                if len(s) == s.maxlen and s[0]:
                    self._met -= 1
                s.append(met)
                self._met += met
        for p in self._listeners["on_finish"]:
            p.on_finish(request, instance, outcome, now)

    # -- signals ----------------------------------------------------------------------
    @property
    def attainment(self) -> float | None:
        """SLO attainment over the recent window, None below ``min_samples`` samples."""
        n = len(self._samples)
        return self._met / n if n >= self.min_samples else None

    def _capacity(self, cluster: ClusterView) -> int:
        routable = cluster.routable
        if routable is not self._cap_for:
            self._cap_for = routable
            self._cap = sum(v.spec.max_inflight for v in routable)
        return self._cap

    def load(self, cluster: ClusterView) -> float:
        """Queued requests per unit of routable concurrency (inf when nothing is routable)."""
        cap = self._capacity(cluster)
        if cap == 0:
            return float("inf") if cluster.queued else 0.0
        return cluster.queued / cap

    def utilisation(self, cluster: ClusterView) -> float:
        cap = self._capacity(cluster)
        return sum(v.inflight for v in cluster.routable) / cap if cap else 0.0

    def _decide(self, cluster: ClusterView) -> tuple[str, str] | None:
        att = self.attainment
        n = len(self._samples)
        if att is not None and att < self.attainment_low:
            return "slo", f"attainment {att:.2f} < {self.attainment_low:.2f} over last {n}"
        load = self.load(cluster)
        if load > self.load_high:
            util = self.utilisation(cluster)
            head = f"queue/capacity {load:.2f} > {self.load_high:.2f} (utilisation {util:.2f})"
            if self._since_slo < self.window:
                return "slo", f"{head} with SLO traffic"
            levels = [i for i, k in enumerate(cluster.queued_by_priority) if k]
            if len(levels) >= 2:
                return "priority", (f"{head}, priorities {levels} queued, no SLO requests in "
                                    f"the last {self.window} finished")
            return None
        if load < self.load_low and (att is None or att > self.attainment_high):
            tail = ("no attainment samples" if att is None else
                    f"attainment {att:.2f} > {self.attainment_high:.2f} over last {n}")
            return self.base_policy, f"queue/capacity {load:.2f} < {self.load_low:.2f} and {tail}"
        return None

    # -- switching --------------------------------------------------------------------
    def tick(self, now: float, cluster: ClusterView) -> list[PolicySwitch]:
        out = self._cur.tick(now, cluster)
        if self._last_switch_s is not None and now - self._last_switch_s < self.min_dwell_s:
            return out
        decision = self._decide(cluster)
        if decision is None:
            return out
        target, cause = decision
        if target == self._active or target not in self._inners:
            return out
        return [*out, self.switch_to(target, now, cause)]

    def switch_to(self, target: str, now: float, cause: str) -> PolicySwitch:
        """Make ``target`` active, moving every queued request over; records the switch."""
        new = self._inners[target]
        for r in self._cur.drain():
            new.push(r, now)
        sw = PolicySwitch(now, self._active, target, cause)
        self._active, self._cur = target, new
        self._last_switch_s = now
        self.switches.append(sw)
        return sw
