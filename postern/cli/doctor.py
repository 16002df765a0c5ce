"""``postern doctor``: check the installation and say what to do about each problem."""

from __future__ import annotations

import click

from postern.cli.context import emit, json_option


@click.command()
@json_option
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config file to check (default: the one `postern --config` or $POSTERN_CONFIG names, else ./postern.toml).",
)
@click.pass_context
def doctor(ctx, as_json, config_path):
    """Check config, files, ports, database, backends, DNS and TLS; explain each problem.

    Exit status: 0 when all is OK, 1 when there are warnings (no failure), 2 when
    anything failed. Nothing is changed, and no mail is sent."""
    from postern.core.doctor.checks import run_checks
    from postern.core.doctor.report import exit_code, render

    path = config_path or ctx.find_root().ensure_object(dict).get("config_path")
    findings = run_checks(path)
    emit(as_json, [f.as_json() for f in findings], render(findings))
    ctx.exit(exit_code(findings))
