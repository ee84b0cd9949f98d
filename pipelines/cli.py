"""The ``aisle`` command line.

Every job is a subcommand whose implementation lives in its own module and is
imported only when that subcommand runs, so ``aisle --help`` stays fast and a
job's heavy dependencies (TensorFlow, torch) load only for that job.
Beam pipeline flags that aisle does not define (``--runner``, ``--project``,
``--region``, ``--temp_location``, ...) pass through to Beam.
"""

from __future__ import annotations

import importlib
import logging

import click

# subcommand -> "module:attribute" of a click.Command
COMMANDS = {
    "ingest": "pipelines.ingest:command",
    "enrich": "pipelines.enrich:command",
    "recommend": "pipelines.recommend:command",
    "index": "pipelines.recommend:index_command",
    "pipeline": "pipelines.kfp_cli:command",
    "demo": "pipelines.demo:command",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module on first use."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return None
        return getattr(module, attr)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """aisle: retail catalog and event pipelines on Apache Beam."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose == 0:  # Beam relays every worker's start-up chatter as warnings
        logging.getLogger("apache_beam").setLevel(logging.ERROR)


def main(argv=None) -> int:
    """Console-script entry point."""
    from transforms.errors import AisleError

    try:
        cli.main(args=argv, prog_name="aisle", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    except AisleError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
