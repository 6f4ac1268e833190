"""The ``sagellm`` command line: one group, a module per command family."""

from __future__ import annotations

import click

from control_plane import ConfigError
from control_plane.policies import POLICIES
from control_plane.routing import FILTERS, PICKERS, ROUTERS, SCORERS
from sagellm.cli_calibrate import calibrate_cmd
from sagellm.cli_compare import compare_cmd
from sagellm.cli_emulate import emulate_cmd
from sagellm.cli_engines import engines
from sagellm.cli_gateway import gateway_cmd
from sagellm.cli_replay import replay_cmd
from sagellm.cli_sim import SYNTHETIC_REQUESTS, sim_cmd, spec_label
from sagellm.cli_speed import speed_check_cmd
from sagellm.cli_workloads import workloads
from sagellm.experiment import load_experiment
from sagellm.plan import plan_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sagellm")
def main() -> None:
    """sageLLM: scheduling policies, routers and planning for LLM inference clusters."""


@main.command()
def plugins() -> None:
    """List the registered policies, routers and router parts (plugins included)."""
    for title, reg in (("policies", POLICIES), ("routers", ROUTERS), ("filters", FILTERS),
                       ("scorers", SCORERS), ("pickers", PICKERS)):
        click.echo(f"{title}: {', '.join(reg.names())}")


@main.group()
def config() -> None:
    """Experiment configuration files."""


@config.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def config_check(path) -> None:
    """Validate an experiment YAML and print what it describes."""
    try:
        exp = load_experiment(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{path}: ok")
    click.echo(f"  instances: {len(exp.instances)} "
               f"({', '.join(x.instance_id for x in exp.instances)})")
    click.echo(f"  policy: {spec_label(exp.policy)}  router: {spec_label(exp.router)}")
    w = exp.workload
    n = w.requests or SYNTHETIC_REQUESTS
    click.echo(f"  workload: {w.trace}" if w.trace else
               f"  workload: {n} synthetic requests at {w.rate_per_s}/s")
    if exp.failures:
        click.echo(f"  failures: {', '.join(f'{i} down {d:g}s' for i, d, _ in exp.failures)}")


main.add_command(sim_cmd)
main.add_command(workloads)
main.add_command(plan_cmd)
main.add_command(engines)
main.add_command(gateway_cmd)
main.add_command(replay_cmd)
main.add_command(calibrate_cmd)
main.add_command(speed_check_cmd)
main.add_command(emulate_cmd)
main.add_command(compare_cmd)

if __name__ == "__main__":
    main()
