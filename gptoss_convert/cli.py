"""The `gptoss-convert` command line. Commands are thin: parse, check options, call one library function, render.

Errors are mapped to exit codes in exactly one place (`_Group.invoke`): a GptossConvertError becomes one line
`error: ...` on stderr and its exit code; tracebacks only with GPTOSS_CONVERT_DEBUG=1.
"""

import os
import sys

import click

from gptoss_convert import __version__
from gptoss_convert.errors import GptossConvertError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GptossConvertError as error:
            if os.environ.get("GPTOSS_CONVERT_DEBUG"):
                raise
            click.echo(f"error: {error}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gptoss-convert")
def cli():
    """Download, convert and verify gpt-oss checkpoints against Hugging Face Transformers."""


def main():
    cli()


if __name__ == "__main__":
    main()
