"""``sagellm gateway``: the OpenAI-compatible gateway in front of running vLLM engines.

Engines are given as ``--engine URL`` (instance id ``host:port``) or ``--engine ID=URL``,
or come from an experiment YAML (``--config``) whose instances carry ``url:``; bare
``--engine URL`` values then fill, in order, the instances without one. Policy, router and
the control-plane settings come from the options, else the YAML, else fifo / round_robin.
A policy or router may be a name or an inline YAML spec:
``--policy '{type: priority, params: {aging_s: 10}}'``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import click
import yaml
from yarl import URL

from control_plane import ConfigError, ControlPlane, ControlPlaneConfig, InstanceSpec
from control_plane.policies import create_policy
from control_plane.routing import create_router
from live.client import EngineTimeouts, normalize_url
from live.gateway import Gateway, GatewayConfig
from live.serve import run_until_signalled
from sagellm.experiment import load_experiment

__all__ = ["build_gateway", "gateway_cmd", "parse_engines", "parse_spec"]


def parse_engines(values: tuple[str, ...] | list[str]) -> list[tuple[str | None, str]]:
    """``[(instance id or None, normalized URL)]`` from ``ID=URL`` / ``URL`` values."""
    out = []
    for v in values:
        iid, sep, url = v.partition("=")
        if not sep:
            iid, url = None, v
        elif not iid or "/" in iid:
            raise click.BadParameter(f"{v!r}: expected URL or ID=URL", param_hint="--engine")
        try:
            out.append((iid, normalize_url(url)))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--engine") from exc
    return out


def _default_id(url: str) -> str:
    u = URL(url)
    return f"{u.host}:{u.port}"


def parse_spec(text: str | None, what: str) -> object:
    """A policy / router given as a name or inline YAML mapping."""
    if text is None:
        return None
    if text.lstrip().startswith("{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise click.BadParameter(f"invalid YAML: {exc}", param_hint=f"--{what}") from exc
    return text


def build_gateway(engines: list[tuple[str | None, str]], *, config_path: str | None = None,
                  policy: object = None, router: object = None, max_inflight: int | None = None,
                  max_queue: int | None = None, gateway: GatewayConfig | None = None
                  ) -> Gateway:
    """The gateway the command runs (raises ConfigError / click errors on bad input)."""
    control = ControlPlaneConfig()
    if config_path is not None:
        exp = load_experiment(config_path)
        specs = [getattr(x, "spec", x) for x in exp.instances]
        policy = exp.policy if policy is None else policy
        router = exp.router if router is None else router
        control = exp.control
        named = {i: u for i, u in engines if i is not None}
        bare = [u for i, u in engines if i is None]
        known = {s.instance_id for s in specs}
        unknown = sorted(set(named) - known)
        if unknown:
            raise click.BadParameter(f"unknown instance id(s) {unknown}; the config has "
                                     f"{sorted(known)}", param_hint="--engine")
        out = []
        for s in specs:
            url = named.get(s.instance_id) or s.url
            if url is None and bare:
                url = bare.pop(0)
            if url is None:
                raise click.BadParameter(f"instance {s.instance_id!r} has no URL (give "
                                         f"--engine {s.instance_id}=URL or url: in the "
                                         f"config)", param_hint="--engine")
            out.append(dataclasses.replace(s, url=normalize_url(url)))
        if bare:
            raise click.BadParameter(f"{len(bare)} engine URL(s) left over: every instance "
                                     f"of the config already has one", param_hint="--engine")
        specs = out
        if max_inflight is not None:
            specs = [dataclasses.replace(s, max_inflight=max_inflight) for s in specs]
    else:
        if not engines:
            raise click.UsageError("give at least one --engine URL (or --config)")
        specs = [InstanceSpec(iid or _default_id(url), url=url,
                              max_inflight=max_inflight or 64) for iid, url in engines]
        ids = [s.instance_id for s in specs]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise click.BadParameter(f"duplicate instance ids {dup}", param_hint="--engine")
    if max_queue is not None:
        control = dataclasses.replace(control, max_queue=max_queue)
    policy = "fifo" if policy is None else policy
    router = "round_robin" if router is None else router
    try:
        create_policy(policy)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--policy") from exc
    try:
        create_router(router)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--router") from exc
    return Gateway(ControlPlane(specs, policy, router, control), config=gateway)


@click.command("gateway")
@click.option("--engine", "engines", multiple=True, metavar="[ID=]URL",
              help="A running vLLM server (repeatable): URL or ID=URL.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Experiment YAML: instances (with url:), policy, router, control.")
@click.option("--policy", help="Queue policy: name or inline YAML spec (default fifo).")
@click.option("--router", help="Router: name or inline YAML spec (default round_robin).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--scrape-interval", default=0.5, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Seconds between /metrics "
              "scrapes of each engine.")
@click.option("--health-interval", default=1.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Seconds between /health "
              "probes of each engine.")
@click.option("--health-failures", default=2, show_default=True, type=click.IntRange(1),
              help="Failed probes in a row that mark an engine down.")
@click.option("--tick-interval", default=0.5, show_default=True,
              type=click.FloatRange(min=0, min_open=True))
@click.option("--max-inflight", type=click.IntRange(1),
              help="Requests in flight per engine (default 64, or the config's).")
@click.option("--max-queue", type=click.IntRange(1), help="Global queue bound (requests).")
@click.option("--engine-priority/--no-engine-priority", default=False, show_default=True,
              help="Pass request priorities to vLLM (engines started with "
                   "--scheduling-policy priority).")
@click.option("--connect-timeout", default=5.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True))
@click.option("--read-timeout", default=600.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Longest silence of an engine while answering.")
@click.option("--records", "records_path", type=click.Path(dir_okay=False),
              help="Write the request records (JSON lines) here on shutdown.")
@click.option("--admin-token", envvar="SAGELLM_ADMIN_TOKEN",
              help="Require 'Authorization: Bearer TOKEN' on /admin/*.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def gateway_cmd(engines, config_path, policy, router, host, port, scrape_interval,
                health_interval, health_failures, tick_interval, max_inflight, max_queue,
                engine_priority, connect_timeout, read_timeout, records_path, admin_token,
                log_level) -> None:
    """Serve the OpenAI API on HOST:PORT in front of running vLLM engines."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    cfg = GatewayConfig(scrape_interval_s=scrape_interval, health_interval_s=health_interval,
                        health_fail_threshold=health_failures, tick_interval_s=tick_interval,
                        pass_priority=engine_priority, admin_token=admin_token,
                        timeouts=EngineTimeouts(connect_s=connect_timeout,
                                                read_s=read_timeout))
    try:
        gw = build_gateway(parse_engines(engines), config_path=config_path,
                           policy=parse_spec(policy, "policy"),
                           router=parse_spec(router, "router"), max_inflight=max_inflight,
                           max_queue=max_queue, gateway=cfg)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    cp = gw.cp
    for v in cp.cluster.instances:
        click.echo(f"engine {v.instance_id}: {gw.clients[v.instance_id].base_url} "
                   f"(max_inflight {v.spec.max_inflight})")
    click.echo(f"policy {cp.policy.name}, router {cp.router.name}; "
               f"OpenAI API on http://{host}:{port}/v1")

    async def start() -> None:
        try:
            await gw.listen(host, port)
        except OSError as exc:
            raise click.ClickException(f"cannot serve on {host}:{port}: "
                                       f"{exc.strerror or exc}") from exc

    run_until_signalled(start, gw.close)
    if records_path:
        rows = [json.dumps(r.to_dict()) for r in gw.records.records()]
        Path(records_path).write_text("".join(line + "\n" for line in rows))
        click.echo(f"{len(rows)} records -> {records_path}")
