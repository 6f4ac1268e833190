"""``sagellm speed-check``: how much slower or faster a running vLLM engine is than its
profile right now (:mod:`live.speed_check`).

A profile is measured once and machines drift (other tenants, thermal limits, a new driver);
this tells, in a few seconds of probes against the idle engine, whether the profile still
holds and by which factors to scale it (``decode`` / ``prefill``: measured over predicted,
1.0 when the profile matches). With ``--neighbour URL`` (another engine on the same
machine, idle too) it also measures the engine's decode while that one decodes, next to
the profile's ``neighbour_decode_slowdown_decode``: that slowdown drifts with the host as
the speed does. Exit code 0 with the factors; 1 with the reason when an engine cannot be
probed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import click

from control_plane import ConfigError
from control_plane.perf.profile import FittedPredictor, read_profile, resolve_profile
from live.calibrate import CALIBRATION_TIMEOUTS, CalibrationConfig, CalibrationError
from live.client import EngineClient
from live.speed_check import speed_check
from sagellm.cli_calibrate import url_option

__all__ = ["speed_check_cmd"]


@click.command("speed-check")
@click.option("--engine", "url", callback=url_option, required=True, metavar="URL",
              help="The running vLLM server to measure (it must be idle).")
@click.option("--profile", required=True,
              help="Its profile: a CSV path or a built-in name (sagellm calibrate --out).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Repeats of each probe (the factors are their medians).")
@click.option("--neighbour", "neighbour_url", callback=url_option, metavar="URL",
              help="Another engine on the same machine (idle): also measure the decode "
              "slowdown while it decodes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def speed_check_cmd(url, profile, repeats, neighbour_url, as_json):
    """Measure an engine's speed against its profile."""
    try:
        table = read_profile(resolve_profile(profile))
        predictor, meta = FittedPredictor.from_table(table), table.meta
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--profile") from None
    cfg = CalibrationConfig(max_batched_tokens=int(meta.get("max_num_batched_tokens", 2048)),
                            max_num_seqs=int(meta.get("max_num_seqs", 16)))

    async def run():
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(
                EngineClient(url, timeouts=CALIBRATION_TIMEOUTS))
            neighbour = (await stack.enter_async_context(
                EngineClient(neighbour_url, timeouts=CALIBRATION_TIMEOUTS))
                if neighbour_url else None)
            return await speed_check(client, predictor, cfg=cfg, repeats=repeats,
                                     neighbour=neighbour,
                                     say=lambda m: None if as_json else click.echo(m))
    try:
        got = asyncio.run(run())
    except CalibrationError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        extra = ({"neighbour": neighbour_url, "profile_decode_by_decode":
                  predictor.neighbour_decode_slowdown_decode} if neighbour_url else {})
        click.echo(json.dumps({"engine": url, "profile": profile, **extra, **got.as_dict()}))
        return
    for name, v in (("decode", got.decode), ("prefill", got.prefill)):
        click.echo(f"{name}: x{v:.3f} ({abs(v - 1) * 100:.1f} % "
                   f"{'slower' if v >= 1 else 'faster'} than the profile)")
    if got.decode_by_decode is not None:
        click.echo(f"decode while the neighbour decodes: +{got.decode_by_decode * 100:.1f} % "
                   f"(the profile: +{predictor.neighbour_decode_slowdown_decode * 100:.1f} %)")
