"""The `speedsim` command line. Thin: parse, call a library function, print.

Every command exits 0 on success and 2 with one line naming the file, field or row on bad
input (a `UserError`), never with a traceback.
"""

from __future__ import annotations

import json
import sys

import click

from speedsim.errors import UserError


def emit_json(obj) -> None:
    """Print one JSON object on stdout and nothing else."""
    click.echo(json.dumps(obj, indent=1, sort_keys=False, default=float))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="speedsim")
def cli() -> None:
    """Simulate SPEED speculative pipelined decoding on hardware profiles."""


# ---------------------------------------------------------------- commands
# Each command is a thin wrapper: parse options, call one library function, print.
# (hardware / validation commands, then model / trace commands, then simulate / sweep.)


def main() -> None:
    """Console entry point: runs the CLI, turning user errors into exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except UserError as err:
        click.echo(f"speedsim: error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("speedsim: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
