"""Click callbacks that check option values, shared by the commands of cli.py and goldens_cli.py (which must not
import cli.py: nothing does). Each raises click.BadParameter, which the CLI reports in one line with exit 2."""

import click


def non_negative(ctx, param, value):
    if value is not None and not value >= 0:  # `not >=` also refuses nan, which would fail (or pass) every comparison
        raise click.BadParameter(f"must be a number >= 0, got {value}")
    return value


def fraction(ctx, param, value):
    if value is not None and not 0 <= value <= 1:
        raise click.BadParameter(f"must be between 0 and 1, got {value}")
    return value
