"""The `hpsearch` command: each subcommand parses its options, calls one function, prints."""

from __future__ import annotations

import sys

import click

from hpsearch import params


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpsearch")
def main() -> None:
    """Hyperparameter sweeps over timm image classifiers, run as torchrun DDP trials."""


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]},
    epilog="\b\nHyperparameters (--key=value, --key value, dashes or underscores):\n" + params.help_text(),
)
@click.pass_context
def train(ctx: click.Context) -> None:
    """Run one trial in this process: hpsearch train [--config FILE.yaml] [--key=value ...].

    For N DDP workers: torchrun --standalone --nproc_per_node=N -m hpsearch.train [--key=value ...]
    """
    from hpsearch.train.loop import main as train_main

    sys.exit(train_main(ctx.args))


if __name__ == "__main__":
    main()
