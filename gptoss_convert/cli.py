"""The `gptoss-convert` command line. Commands are thin: parse, check options, call one library function, render.

Errors are mapped to exit codes in exactly one place (`_Group.invoke`): a GptossConvertError becomes one line
`error: ...` on stderr and its exit code; tracebacks only with GPTOSS_CONVERT_DEBUG=1.
"""

import os
import sys
from pathlib import Path

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


@cli.command()
@click.option("--model", "-m", required=True, metavar="tiny|20b|120b|PATH",
              help="tiny (embedded), 20b / 120b (fetched by `gptoss-convert download`) or a checkpoint directory "
                   "(HF layout, original/, or our own format).")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Output directory, written via a temporary directory beside it.")
@click.option("--dtype", type=click.Choice(["bfloat16", "float32"]), default="bfloat16", show_default=True,
              help="dtype of every output tensor (MXFP4 experts are dequantized exactly to it).")
@click.option("--dry-run", is_flag=True, help="Print the tensors, shards and total size that would be written; write nothing.")
@click.option("--force", is_flag=True, help="Replace --out if it already exists.")
def convert(model, out, dtype, dry_run, force):
    """Convert a gpt-oss checkpoint into gptoss_model's own format (sharded safetensors), one tensor at a time,
    after a strict audit: every checkpoint tensor used once, every parameter filled, shapes and dtypes checked.

    \b
    Examples:
      gptoss-convert convert --model tiny --out /tmp/tiny-gptoss
      gptoss-convert convert --model 20b --out ~/gpt-oss-20b-gptoss --dry-run
      gptoss-convert convert --model ./gpt-oss-20b/original --out ./converted --dtype float32 --force
    """
    from gptoss_convert import convert as conversion

    if dry_run:
        click.echo(conversion.format_plan(conversion.plan_convert(model, out, conversion.DTYPES[dtype])))
        return
    plan = conversion.convert(model, out, conversion.DTYPES[dtype], force=force)
    click.echo(f"wrote {plan.out}: {plan.tensor_count} tensors in {len(plan.shards)} shard(s), "
               f"{plan.total_size:,} bytes ({dtype})")


def main():
    cli()


if __name__ == "__main__":
    main()
