"""The `gptoss-convert` command line. Commands are thin: parse, check options, call one library function, render.

Errors are mapped to exit codes in exactly one place (`_Group`): a GptossConvertError becomes one line
`error: ...` on stderr and its exit code, and so does a bad option (Click's usage errors, exit 2); tracebacks only
with GPTOSS_CONVERT_DEBUG=1.
"""

import os
import sys
from pathlib import Path

import click

from gptoss_convert import __version__
from gptoss_convert.cli_checks import fraction, non_negative
from gptoss_convert.errors import GptossConvertError


class _Group(click.Group):
    def main(self, *args, standalone_mode=True, **kwargs):
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as error:  # one line naming the option and what was expected, plus where to look
            if type(error).__name__ == "NoArgsIsHelpError":  # bare `gptoss-convert`: show the help, as Click does
                click.echo(error.ctx.get_help())
                sys.exit(error.exit_code)
            command = f"{error.ctx.command_path} --help" if error.ctx else "gptoss-convert --help"
            click.echo(f"error: {error.format_message()} (see `{command}`)", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("error: interrupted", err=True)
            sys.exit(130)

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


def _progress_option(command):
    return click.option("--progress/--no-progress", default=None,
                        help="Force the progress bar on or off.  [default: a bar on a terminal, elsewhere (CI logs) "
                             "a plain line at most every 10 s]")(command)


def _pins_option(command):
    return click.option("--no-verify", is_flag=True,
                        help="Skip checking the files of a download of a pinned official revision against the pinned "
                             "sha256 (gptoss_convert/pins.py).")(command)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gptoss-convert")
def cli():
    """Download, convert and verify gpt-oss checkpoints against Hugging Face Transformers."""


@cli.command()
@click.option("--model", "-m", required=True, metavar="20b|120b|OWNER/NAME",
              help="20b / 120b (openai/gpt-oss-20b / -120b) or any hub repo id.")
@click.option("--revision", metavar="REV",
              help="Branch, tag or commit; resolved once to a commit sha.  [default: main]")
@click.option("--layout", type=click.Choice(["hf", "original", "all"]), default="hf", show_default=True,
              help="hf: root configs, tokenizer, chat template, model-*.safetensors; original: original/*; "
                   "all: everything but metal/.")
@click.option("--local-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Download here.  [default: $GPTOSS_CONVERT_HOME/models/OWNER--NAME]")
@click.option("--cache-dir", type=click.Path(file_okay=False), envvar="HF_HUB_CACHE", metavar="DIR",
              help="huggingface_hub cache; files already there are copied, not fetched.  [default: HF_HUB_CACHE]")
@click.option("--dry-run", is_flag=True,
              help="List files, sizes, what is here and what would be fetched; write nothing.")
@click.option("--no-verify", is_flag=True,
              help="Skip the sha256 check of downloaded files (sizes are still checked).")
@_progress_option
def download(model, revision, layout, local_dir, cache_dir, dry_run, no_verify, progress):
    """Download a gpt-oss checkpoint from the Hugging Face Hub (or the mirror in HF_ENDPOINT), check every file
    against the hub's sha256, and record repo, commit and checksums in gptoss-manifest.json.

    \b
    Examples:
      gptoss-convert download --model 20b
      gptoss-convert download --model 120b --layout original --dry-run
      gptoss-convert download -m openai/gpt-oss-20b --revision <commit-sha> --local-dir /data/gpt-oss-20b
    """
    from gptoss_convert import hub

    options = dict(revision=revision, layout=layout, local_dir=local_dir, cache_dir=cache_dir)
    if dry_run:
        plan = hub.plan_download(model, **options)
        click.echo(_download_plan_text(plan))
        hub.check_disk_space(plan)
        return
    click.echo(_download_summary_text(hub.download(model, verify=not no_verify, progress=progress,
                                                   **options)))


def _download_plan_text(plan) -> str:
    """What `download --dry-run` would do: one line per file, then the totals."""
    from gptoss_model.io import format_bytes

    lines = [f"{plan.repo_id}  revision {plan.revision} = commit {plan.commit}  (layout {plan.layout})"]
    for f in plan.files:
        lines.append(f"  {f.state:<8} {format_bytes(f.remote.size):>10}  {f.remote.path}")
    fetch = [f for f in plan.files if f.state in ("fetch", "cached")]
    free = "unknown" if plan.free_bytes is None else format_bytes(plan.free_bytes)
    lines.append(
        f"{len(plan.files)} files, {format_bytes(plan.total_bytes)}; would write {len(fetch)} files, "
        f"{format_bytes(plan.incoming_bytes)} into {plan.directory} ({free} free)"
    )
    return "\n".join(lines)


def _download_summary_text(result) -> str:
    """What `download` did: the commit, what was fetched or replaced, what was checked, the manifest."""
    from gptoss_model.io import format_bytes

    lines = [f"{result.repo_id}  revision {result.revision} = commit {result.commit}  (layout {result.layout})"]
    lines.append(f"{len(result.files)} files, {format_bytes(result.total_bytes)} in {result.directory}")
    if result.offline:
        lines.append("HF_HUB_OFFLINE=1: nothing fetched; using the earlier download (file sizes checked)")
    else:
        if result.incoming_files:
            lines.append(f"fetched {result.incoming_files} file(s), {format_bytes(result.incoming_bytes)}")
        if result.resumed:
            lines.append(f"resumed {len(result.resumed)} file(s) left half-fetched by an earlier run: "
                         f"{', '.join(result.resumed)}")
        if result.replaced:
            lines.append(f"replaced {len(result.replaced)} damaged local file(s): {', '.join(result.replaced)}")
        if not result.incoming_files:
            lines.append("nothing to fetch: every file was already here and verified")
        lines.append(
            "sha256 / git blob ids checked against the hub's listing"
            if result.verified
            else "--no-verify: file sizes checked only, sha256 not checked"
        )
        if result.pinned:
            lines.append(f"{result.pinned} file(s) match the pinned official sha256 of {result.repo_id}@{result.commit}")
    lines.append(f"manifest: {result.manifest_path}")
    return "\n".join(lines)


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
@_pins_option
@_progress_option
def convert(model, out, dtype, dry_run, force, no_verify, progress):
    """Convert a gpt-oss checkpoint into gptoss_model's own format (sharded safetensors), one tensor at a time,
    after a strict audit: every checkpoint tensor used once, every parameter filled, shapes and dtypes checked.

    \b
    Examples:
      gptoss-convert convert --model tiny --out /tmp/tiny-gptoss
      gptoss-convert convert --model 20b --out ~/gpt-oss-20b-gptoss --dry-run
      gptoss-convert convert --model ./gpt-oss-20b/original --out ./converted --dtype float32 --force
    """
    from gptoss_convert import convert as conversion
    from gptoss_convert.options import DTYPES

    if dry_run:
        click.echo(conversion.format_plan(conversion.plan_convert(model, out, DTYPES[dtype])))
        return
    plan = conversion.convert(model, out, DTYPES[dtype], force=force, progress=progress, check_pins=not no_verify)
    click.echo(f"wrote {plan.out}: {plan.tensor_count} tensors in {len(plan.shards)} shard(s), "
               f"{plan.total_size:,} bytes ({dtype})")


@cli.command()
@click.option("--model", "-m", default="tiny", show_default=True, metavar="tiny|20b|120b|PATH",
              help="tiny (embedded, no download), 20b / 120b (fetched by `gptoss-convert download`) or a checkpoint "
                   "directory (HF layout, original/, or our own format).")
@click.option("--candidate", "-c", default="gptoss_model", show_default=True, metavar="SPEC",
              help="The implementation under test: gptoss_model, gptoss_model:fast, openai, transformers:sdpa, "
                   "transformers:flex_attention, path/to/file.py:OBJECT or package.module:OBJECT "
                   "(docs/candidates.md).")
@click.option("--reference", "-r", default="transformers", show_default=True, metavar="transformers|openai",
              help="What the candidate is compared with: Transformers' eager gpt-oss, or OpenAI's gpt_oss.torch.")
@click.option("--atol", type=float, default=1e-3, show_default=True, callback=non_negative,
              help="float32 gate: allowed |candidate - reference| per element, every component of every layer and "
                   "logits.")
@click.option("--rtol", type=float, default=0.0, show_default=True, callback=non_negative,
              help="float32 gate: relative part of the tolerance (allclose: atol + rtol·|reference|).")
@click.option("--max-kl", type=float, default=None, callback=non_negative, metavar="K",
              help="Gate on the mean KL(reference || candidate) of the final logits, in nats.  "
                   "[default: off for float32, 1e-2 for bfloat16]")
@click.option("--min-top1", type=float, default=None, callback=fraction, metavar="F",
              help="Gate on top-1 agreement of the final logits.  [default: off for float32, 0.95 for bfloat16]")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="float32: exact parity mode (gates on --atol/--rtol); bfloat16: the native precision "
                   "(gates on KL and top-1).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where layers run; one layer's weights are on it at a time.")
@click.option("--prompt", "prompts", multiple=True, metavar="TEXT",
              help="A prompt (repeatable), tokenized with the checkpoint's tokenizer.json, or token ids '1 2 3' "
                   "when it has none.  [default: one prompt shorter than the sliding window, one crossing it, and "
                   "for small checkpoints one past the original 4,096-token context, and a harmony conversation "
                   "longer than the window when the checkpoint has a chat template]")
@click.option("--token-ids", type=click.Path(dir_okay=False), metavar="FILE",
              help="JSON file with a list of token ids, or a list of such lists (one per prompt).")
@click.option("--chat", "chats", multiple=True, metavar="TEXT",
              help="A user message (repeatable), rendered as a conversation through the checkpoint's "
                   "chat_template.jinja (harmony), as Transformers' apply_chat_template does.")
@click.option("--messages", "messages_file", metavar="FILE.json",
              help="A conversation ([{\"role\": ..., \"content\": ...}, ...]) or a list of them, rendered through the "
                   "chat template.")
@click.option("--goldens", metavar="DIR|tiny",
              help="Compare with recorded goldens (`gptoss-convert goldens`; tiny: the shipped ones) instead of "
                   "running the reference; Transformers is not imported.")
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), metavar="OLD/report.json",
              help="An earlier run's report.json: every report gains per-layer deltas against it.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default="verify-report",
              show_default=True, metavar="DIR", help="Where report.json, report.md and report.html are written.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also write JUnit XML: one test case per layer and component.")
@click.option("--quiet", "-q", is_flag=True, help="No table and no progress bar; only errors and the verdict line.")
@_pins_option
@_progress_option
@click.pass_context
def verify(ctx, model, candidate, reference, atol, rtol, max_kl, min_top1, dtype, device, prompts, token_ids, chats,
           messages_file, goldens, baseline, report_dir, junit, quiet, no_verify, progress):
    """Verify an implementation of gpt-oss (the candidate, default gptoss_model) against a reference (default
    Transformers) on a checkpoint, layer by layer, streaming one layer at a time.

    Each candidate layer runs fed the reference's input (isolated: a bug shows at its own layer), fed its own
    previous output (accumulated: end-to-end drift), and, where it has a KV cache, token by token (cached). Exit
    codes: 0 pass, 1 parity failure (or a candidate that fails while running), 2 usage or input error (or a
    candidate that cannot be loaded or built), 3 checkpoint integrity error.

    \b
    Examples:
      gptoss-convert verify
      gptoss-convert verify --candidate my_port.py:MyPort --baseline last-run/report.json
      gptoss-convert verify --model 20b --candidate openai --atol 1e-3 --junit verify-report/junit.xml
      gptoss-convert verify --model ./gpt-oss-20b --dtype bfloat16 --device cuda --prompt "Hello there"
    """
    from gptoss_convert import report
    from gptoss_convert.baseline import baseline_deltas, load_baseline
    from gptoss_convert.errors import ParityError
    from gptoss_convert.gate import Thresholds
    from gptoss_convert.verify import run_verify

    earlier = load_baseline(baseline) if baseline else None  # a bad file fails before the run, not after
    thresholds = Thresholds(dtype=dtype, atol=atol, rtol=rtol, max_kl=max_kl, min_top1=min_top1)
    if goldens:
        summary, verdict = _verify_goldens(ctx, goldens, model, candidate, thresholds, device, quiet)
    else:
        result = run_verify(model, thresholds, device=device, prompts=prompts, token_ids_file=token_ids,
                            progress=False if quiet else progress, candidate=candidate, reference=reference,
                            check_pins=not no_verify, chats=chats, messages_file=messages_file)
        summary, verdict = result.to_dict(), result.verdict
    if earlier is not None:
        summary["baseline"] = baseline_deltas(summary, earlier)
    written = report.write_reports(summary, report_dir, junit)
    if not quiet:
        click.echo(report.terminal_table(summary))
        click.echo(f"reports: {', '.join(str(p) for p in written)}", err=True)
    pair = f"{summary['candidate']['name']} against {summary['reference']['name']}"
    if not verdict.passed:
        raise ParityError(f"parity failure of {pair}, first at {verdict.first.describe()}")
    click.echo(f"PASSED: {pair}, {len(summary['layers'])} layers, {summary['checkpoint']['path']} ({dtype}, "
               f"{summary['device']}), {summary['timing']['seconds']:.1f} s")


def _verify_goldens(ctx, goldens, model, candidate, thresholds, device, quiet):
    """verify --goldens: the candidate against recorded reference outputs (12c's goldens_compare)."""
    from click.core import ParameterSource

    from gptoss_convert.goldens_compare import verify_goldens

    for name, option in (("reference", "--reference"), ("prompts", "--prompt"), ("token_ids", "--token-ids"),
                         ("chats", "--chat"), ("messages_file", "--messages")):
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None):
            raise click.UsageError(f"{option} does not apply with --goldens: the goldens hold their reference's "
                                   "outputs for their own prompts")
    explicit_model = ctx.get_parameter_source("model") != ParameterSource.DEFAULT
    return verify_goldens(goldens, model if explicit_model else None, candidate, thresholds, device,
                          progress=not quiet)


# ---- goldens and compare: the commands live in goldens_cli.py (docs/goldens.md) ----------------------------------
from gptoss_convert.goldens_cli import compare as _compare_command, goldens as _goldens_command  # noqa: E402

cli.add_command(_goldens_command)
cli.add_command(_compare_command)


def main():
    cli()


if __name__ == "__main__":
    main()
