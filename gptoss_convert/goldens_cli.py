"""The `goldens` and `compare` commands (registered on the group in cli.py). Thin: parse, call one library
function, render the same reports and exit codes as `verify` (docs/goldens.md)."""

from pathlib import Path

import click

from gptoss_convert.cli_checks import fraction, non_negative


@click.command()
@click.option("--model", "-m", default="tiny", show_default=True, metavar="tiny|20b|120b|PATH",
              help="The checkpoint the goldens are recorded from (and will only be valid for).")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Output directory (inputs.safetensors, expected.safetensors, manifest.json), written via a "
                   "temporary directory beside it.")
@click.option("--prompt", "prompts", multiple=True, metavar="TEXT",
              help="A prompt (repeatable), tokenized with the checkpoint's tokenizer.json, or token ids '1 2 3'.  "
                   "[default: a short prompt and one crossing the sliding window by W/4]")
@click.option("--token-ids", type=click.Path(dir_okay=False), metavar="FILE",
              help="JSON file with a list of token ids, or a list of such lists (one per prompt).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="Compute and storage dtype (stored as computed: nothing is rounded).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--reference", default="transformers", show_default=True, metavar="transformers|openai",
              help="The implementation whose outputs are recorded.")
@click.option("--checked-rows", "checked", type=click.IntRange(min=1), metavar="N",
              help="Keep each layer's components at N rows (never fewer than each prompt's first 4 positions, its "
                   "last and W-2..W+2); layer inputs and outputs are kept at every row.  [default: every row unless "
                   "the goldens would be large: 45 of the 176 default rows for 20b]")
@click.option("--force", is_flag=True, help="Replace --out if it already exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def goldens(model, out, prompts, token_ids, dtype, device, reference, checked, force, quiet):
    """Record the reference's outputs of every component of every layer, so that `verify --goldens` and
    `compare` can check an implementation later without the reference (docs/goldens.md).

    \b
    Examples:
      gptoss-convert goldens --out ./goldens-tiny
      gptoss-convert goldens --model 20b --dtype bfloat16 --device cuda --out ./goldens-20b
    """
    from gptoss_convert.goldens import record_goldens
    from gptoss_convert.goldens_files import EXPECTED, INPUTS, read_manifest

    path = record_goldens(model, out, dtype=dtype, device=device, prompts=prompts, token_ids_file=token_ids,
                          force=force, reference=reference, progress=not quiet, checked=checked)
    manifest = read_manifest(path)
    size = sum(manifest["files"][name]["size"] for name in (INPUTS, EXPECTED))
    rows = sum(len(p["token_ids"]) for p in manifest["prompts"])
    checked = manifest["tensors"]["components.rows"]["shape"][0]
    click.echo(f"wrote {path}: {len(manifest['tensors'])} tensors, {rows} rows of {len(manifest['prompts'])} prompt(s) "
               f"(components at {checked} checked rows), {size:,} bytes ({dtype}, reference "
               f"{manifest['reference']['name']} {manifest['reference']['version']})")


@click.command()
@click.option("--goldens", "goldens_dir", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Goldens written by `gptoss-convert goldens`.")
@click.option("--outputs", required=True, type=click.Path(path_type=Path), metavar="FILE",
              help="outputs.safetensors written by the implementation under test (names as in the goldens).")
@click.option("--atol", type=float, default=1e-3, show_default=True, callback=non_negative,
              help="As for `verify`.")
@click.option("--rtol", type=float, default=0.0, show_default=True, callback=non_negative,
              help="As for `verify`.")
@click.option("--max-kl", type=float, default=None, metavar="K", callback=non_negative,
              help="As for `verify`.")
@click.option("--min-top1", type=float, default=None, metavar="F", callback=fraction,
              help="As for `verify`.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default=None,
              help="The gate's mode.  [default: the goldens' dtype]")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default="verify-report",
              show_default=True, metavar="DIR", help="Where report.json, report.md and report.html are written.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE", help="Also write JUnit XML.")
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), metavar="OLD/report.json",
              help="Add per-layer deltas against an earlier report.")
@click.option("--quiet", "-q", is_flag=True, help="No table; only errors and the verdict line.")
def compare(goldens_dir, outputs, atol, rtol, max_kl, min_top1, dtype, report_dir, junit, baseline, quiet):
    """Check outputs.safetensors written by an implementation in any language against goldens: the same gates,
    reports and exit codes as `verify` (0 pass, 1 parity failure, 2 usage or input error, 3 goldens integrity).
    Tensors the file lacks are reported "not provided", never passed.

    \b
    Examples:
      gptoss-convert compare --goldens ./goldens-tiny --outputs ./outputs.safetensors
    """
    from gptoss_convert.gate import Thresholds
    from gptoss_convert.goldens_compare import compare_files
    from gptoss_convert.goldens_files import read_manifest

    from gptoss_convert.baseline import baseline_deltas, load_baseline

    earlier = load_baseline(baseline) if baseline else None  # a bad file fails before the comparison, not after
    dtype = dtype or read_manifest(goldens_dir)["dtype"]
    thresholds = Thresholds(dtype=dtype, atol=atol, rtol=rtol, max_kl=max_kl, min_top1=min_top1)
    summary, verdict = compare_files(goldens_dir, outputs, thresholds)
    if earlier is not None:
        summary["baseline"] = baseline_deltas(summary, earlier)
    render_and_gate(summary, verdict, report_dir, junit, quiet)


def render_and_gate(summary, verdict, report_dir, junit, quiet) -> None:
    """Write the reports, print the table, exit 1 on a failed gate (as `verify` does)."""
    from gptoss_convert import report
    from gptoss_convert.errors import ParityError
    from gptoss_convert.goldens_compare import not_provided

    written = report.write_reports(summary, report_dir, junit)
    if not quiet:
        click.echo(report.terminal_table(summary))
        click.echo(f"reports: {', '.join(str(p) for p in written)}", err=True)
    if not verdict.passed:
        raise ParityError(f"parity failure, first at {verdict.first.describe()}")
    missing = not_provided(summary)
    click.echo(f"PASSED: {len(summary['layers'])} layers against goldens {summary['reference']['settings']['goldens']} "
               f"({summary['dtype']})" + (f"; {len(missing)} tensor(s) not provided" if missing else ""))

