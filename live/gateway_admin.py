"""The gateway's service endpoints: ``/v1/models``, ``/health``, ``/metrics`` and
``/admin/*`` (see :mod:`live.gateway` for what each answers)."""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import TYPE_CHECKING

from control_plane.actions import PolicySwitch
from control_plane.errors import ControlPlaneError
from control_plane.types import Health
from live.http_server import HttpRequest, HttpServer, Response, error_json, json_response
from live.prom import CONTENT_TYPE

if TYPE_CHECKING:
    from live.gateway import Gateway

__all__ = ["add_routes"]


def add_routes(server: HttpServer, gw: Gateway) -> None:
    """Register the service endpoints of ``gw`` on ``server``."""
    def bind(fn):
        async def handler(http: HttpRequest) -> Response:
            return await fn(gw, http)
        return handler

    server.add("GET", "/v1/models", bind(models))
    server.add("GET", "/health", bind(health))
    server.add("GET", "/metrics", bind(metrics))
    server.add("POST", "/admin/policy", bind(admin_policy))
    server.add("POST", "/admin/router", bind(admin_router))
    server.add("POST", "/admin/health", bind(admin_health))
    server.add("GET", "/admin/state", bind(admin_state))
    server.add("GET", "/admin/records", bind(admin_records))


async def models(gw: Gateway, http: HttpRequest) -> Response:
    ups = [v.instance_id for v in gw.cp.cluster.instances if v.health is Health.UP]
    results = await asyncio.gather(*(gw.clients[i].models() for i in ups),
                                   return_exceptions=True)
    found: dict[str, object] = {}
    errors = []
    for iid, r in zip(ups, results, strict=True):
        if isinstance(r, BaseException):
            errors.append(f"{iid}: {type(r).__name__}: {r}")
            continue
        for m in r.get("data", []) if isinstance(r, dict) else []:
            if isinstance(m, dict) and isinstance(m.get("id"), str):
                found.setdefault(m["id"], m)
    if not found:
        return error_json(503, "no engine listed models: " + ("; ".join(errors) or
                                                                  "no instance is up"),
                              type_="service_unavailable")
    return json_response({"object": "list", "data": list(found.values())})


async def health(gw: Gateway, http: HttpRequest) -> Response:
    inst = {v.instance_id: v.health.value for v in gw.cp.cluster.instances}
    up = any(h == Health.UP.value for h in inst.values())
    return json_response({"status": "ok" if up else "unavailable", "instances": inst},
                             status=200 if up else 503)


async def metrics(gw: Gateway, http: HttpRequest) -> Response:
    return Response(200, gw.metrics.render(), content_type=CONTENT_TYPE)


def _denied(gw: Gateway, http: HttpRequest) -> Response | None:
    token = gw.config.admin_token
    if token is not None and not hmac.compare_digest(
            http.headers.get("authorization", "").encode(), f"Bearer {token}".encode()):
        return error_json(401, "admin endpoints need 'Authorization: Bearer <token>'",
                              type_="authentication_error")
    return None


async def _admin_json(gw: Gateway, http: HttpRequest,
                      key: str) -> tuple[object, Response | None]:
    denied = _denied(gw, http)
    if denied is not None:
        return None, denied
    try:
        data = json.loads(http.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, error_json(400, f"request body is not valid JSON: {exc}")
    if not isinstance(data, dict) or key not in data:
        return None, error_json(400, f"{key} is required", param=key)
    return data, None


async def admin_policy(gw: Gateway, http: HttpRequest) -> Response:
    data, err = await _admin_json(gw, http, "policy")
    if err is not None:
        return err
    try:
        actions = gw.cp.set_policy(data["policy"], gw.now())
    except (ControlPlaneError, ValueError, TypeError) as exc:
        return error_json(400, f"policy: {exc}", param="policy")
    gw.execute(actions)
    sw = next(a for a in actions if type(a) is PolicySwitch)
    return json_response({"switch": {"at_s": sw.at_s, "from_policy": sw.from_policy,
                                         "to_policy": sw.to_policy, "cause": sw.cause},
                              "queued": gw.cp.cluster.queued})


async def admin_router(gw: Gateway, http: HttpRequest) -> Response:
    data, err = await _admin_json(gw, http, "router")
    if err is not None:
        return err
    old = gw.cp.router.name
    try:
        actions = gw.cp.set_router(data["router"], gw.now())
    except (ControlPlaneError, ValueError, TypeError) as exc:
        return error_json(400, f"router: {exc}", param="router")
    gw.execute(actions)
    return json_response({"from_router": old, "to_router": gw.cp.router.name})


async def admin_health(gw: Gateway, http: HttpRequest) -> Response:
    data, err = await _admin_json(gw, http, "instance")
    if err is not None:
        return err
    iid, value = data.get("instance"), data.get("health")
    if not isinstance(iid, str) or iid not in gw.cp.cluster:
        return error_json(400, f"instance: unknown {iid!r}; known: "
                              f"{[v.instance_id for v in gw.cp.cluster.instances]}",
                              param="instance")
    try:
        health = Health(value)
    except ValueError:
        return error_json(400, f"health must be up, draining or down, got {value!r}",
                              param="health")
    gw.execute(gw.cp.set_health(iid, health, gw.now(), "admin"))
    return json_response({"instance": iid, "health": health.value})


async def admin_state(gw: Gateway, http: HttpRequest) -> Response:
    denied = _denied(gw, http)
    if denied is not None:
        return denied
    cp = gw.cp
    return json_response({
        "policy": cp.policy.name, "active_policy": cp.policy.active,
        "router": cp.router.name, "queued": cp.cluster.queued,
        "queued_by_priority": list(cp.cluster.queued_by_priority),
        "pending": len(gw.pending), "records": gw.records.total,
        "instances": [{"id": v.instance_id, "health": v.health.value,
                       "inflight": v.inflight, "dispatched": v.dispatched_total,
                       "engine_running": v.engine_running,
                       "engine_waiting": v.engine_waiting,
                       "engine_kv_usage": v.engine_kv_usage,
                       "url": gw.clients[v.instance_id].base_url}
                      for v in cp.cluster.instances]})


async def admin_records(gw: Gateway, http: HttpRequest) -> Response:
    denied = _denied(gw, http)
    if denied is not None:
        return denied
    lines = [json.dumps(r.to_dict()) for r in gw.records.records()]
    if http.query.get("clear") in ("1", "true"):
        gw.records.clear()
    return Response(200, ("\n".join(lines) + "\n" if lines else "").encode(),
                    content_type="application/x-ndjson")
