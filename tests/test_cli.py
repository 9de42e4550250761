"""The command line's own contract: bad options give one line and exit 2; --help stays fast and light."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from gptoss_convert.cli import cli


@pytest.mark.parametrize("args, names", [
    (["verify", "--atol", "-1"], "--atol"),
    (["verify", "--dtype", "int8"], "--dtype"),
    (["convert", "--model", "tiny"], "--out"),
    (["download", "--model", "20b", "--layout", "metal"], "--layout"),
    (["frobnicate"], "frobnicate"),
])
def test_usage_errors_are_one_line_exit_2(args, names):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], result.stderr
    assert "Usage:" not in result.output


def test_help_does_not_import_torch():
    code = "import sys; from gptoss_convert.cli import cli; sys.argv=['gptoss-convert','--help']\n" \
           "try:\n cli()\nexcept SystemExit:\n pass\nprint('torch' in sys.modules, 'huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"
