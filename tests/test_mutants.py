"""verify catches the real bugs: every mutant in tests/mutants/ (a parity bug that shipped in a real gpt-oss implementation, or one of
the nine sabotage bugs of tests/sabotage.py, put back into gptoss_model) run through
`verify --candidate tests/mutants/NAME.py:CANDIDATE` must exit 1 naming the layer kind, the component and, where
the bug has one, the first failing token position; the control, gptoss_model and openai must pass.

The tight gate: float32 parity of a correct implementation is a few 1e-6 on the tiny checkpoint; one mutant is
small by nature (clamp_gate_both_sides: gate·sigmoid(1.702·gate) moves by < 5e-5 once gate < -7, under the
default --atol 1e-3), so all run at 3e-5, 1000x above a correct implementation's error. The rest also fail at
the default gate (the smallest, YaRN's truncate, by ~8e-3).
"""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from gptoss_convert.checkpoint import open_checkpoint
from gptoss_convert.cli import cli
from gptoss_convert.remap import audit, global_tensors, layer_tensors
from gptoss_convert.tiny import TINY_CONFIG, tiny_checkpoint_dir
from tests.mutants.base import ExpertsWith, Mutant, become
from tests.sabotage import BUGS as SABOTAGE
from tests.load_file import load_module

MUTANTS_DIR = Path(__file__).parent / "mutants"
MUTANTS = sorted(p for p in MUTANTS_DIR.glob("*.py") if p.stem not in ("base", "__init__"))
TIGHT = "3e-5"
WINDOW = TINY_CONFIG.sliding_window
PROMPT_LENGTH = WINDOW + 8  # crosses the window: positions on both sides of W (checklist item 1)


def load_mutant(path: Path):
    """The mutant's module, imported on its own (verify imports it again from the path, as a user's file)."""
    return load_module(path, f"mutant_{path.stem}")


@pytest.fixture(scope="module")
def token_ids(tmp_path_factory) -> Path:
    ids = torch.randint(0, 500, (PROMPT_LENGTH,), generator=torch.Generator().manual_seed(0)).tolist()
    path = tmp_path_factory.mktemp("prompt") / "ids.json"
    path.write_text(json.dumps([ids]))
    return path


def verify(candidate: str, token_ids: Path, report: Path, *extra):
    args = ["verify", "--candidate", candidate, "--token-ids", str(token_ids), "--quiet", "--atol", TIGHT,
            "--report", str(report), *extra]
    result = CliRunner().invoke(cli, args)
    summary = json.loads((report / "report.json").read_text()) if (report / "report.json").is_file() else None
    return result, summary


def test_the_suite_covers_15_real_bugs_and_the_nine_sabotage_bugs():
    real = [p for p in MUTANTS if p.stem[0] == "b" and p.stem[1:3].isdigit()]
    assert len(real) >= 15, [p.stem for p in real]
    assert set(SABOTAGE) <= {p.stem for p in MUTANTS}


@pytest.mark.parametrize("path", MUTANTS, ids=lambda p: p.stem)
def test_mutant_fails_where_its_bug_is(path, token_ids, tmp_path):
    mutant = load_mutant(path)
    expect = mutant.EXPECT
    result, report = verify(f"{path}:CANDIDATE", token_ids, tmp_path / "r")
    if expect is None:  # the control
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1, result.output
    first = report["verdict"]["first_failure"]
    assert (first["attention_type"], first["component"]) == (expect.attention_type, expect.component), first
    assert first["column"] == expect.column, first
    assert f"({expect.attention_type}) {expect.component}" in result.output  # the one-line error names it too
    assert report["candidate"]["name"] == f"mutant:{type(mutant.CANDIDATE).__name__}"
    if expect.position is not None:
        assert first["first_position"]["position"] == expect.position, first
        assert first["window_signature"] == (expect.position == WINDOW)
        assert f"position {expect.position}" in result.output


@pytest.mark.parametrize("candidate", ["gptoss_model", "openai"])
def test_unmodified_candidates_pass_the_tight_gate(candidate, token_ids, tmp_path):
    result, report = verify(candidate, token_ids, tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert report["candidate"]["name"] == candidate


def test_a_mutant_fails_against_the_openai_reference_too(token_ids, tmp_path):
    result, report = verify(f"{MUTANTS_DIR / 'b05_out_of_window_blocks.py'}:CANDIDATE", token_ids, tmp_path / "r",
                            "--reference", "openai")
    assert result.exit_code == 1, result.output
    first = report["verdict"]["first_failure"]
    assert (first["attention_type"], first["component"], first["first_position"]["position"]) == (
        "sliding_attention", "attention", WINDOW)
    assert report["reference"]["name"] == "openai"


# ---- the fixture can show every bug above (docs/mutants.md, "The fixture shows them": the checklist) ---------------


class Probe(Mutant):
    """gptoss_model unchanged, recording the experts' gate and up pre-activations of every token and expert."""

    def edit_layer(self, layer, index):
        seen = self.seen = []

        class Recording(ExpertsWith):
            def activation(self, gate_up):
                seen.append(gate_up.detach().clone())
                return super().activation(gate_up)

        become(layer.mlp.experts, Recording)


def test_tiny_checkpoint_and_prompt_meet_the_verifier_checklist(token_ids):
    from gptoss_convert.candidates.protocol import Context

    ckpt = open_checkpoint(tiny_checkpoint_dir())
    config, plan = ckpt.config, audit(ckpt)
    ids = json.loads(token_ids.read_text())[0]
    # 1. the prompt crosses the window, with positions on both sides of it
    assert len(ids) >= config.sliding_window + 2
    # 2. both layer kinds, an even number of layers
    assert set(config.layer_types) == {"sliding_attention", "full_attention"} and config.num_hidden_layers % 2 == 0
    tensors = [layer_tensors(ckpt, i, torch.float32, plan) for i in range(config.num_hidden_layers)]
    for i, layer in enumerate(tensors):
        # 3. non-zero, non-uniform sinks in every layer
        sinks = layer[f"model.layers.{i}.self_attn.sinks"]
        assert bool((sinks != 0).all()) and float(sinks.std()) > 0.1
        # 6. square expert matrices: a transposed down_proj keeps its shape
        down = layer[f"model.layers.{i}.mlp.experts.down_proj"]
        assert down.shape[1] == down.shape[2]
    # 5. YaRN as the hub has it: truncate false, original_max_position_embeddings present
    rope = json.loads((ckpt.root / "config.json").read_text())["rope_scaling"]
    assert rope["truncate"] is False and rope["original_max_position_embeddings"] == 4096
    # 4. the prompt drives gate > 7, gate < -7 and |up| > 7 in layer 0 (where the SwiGLU mutants must fail)
    probe = Probe()
    probe.setup(Context(ckpt.root, config, torch.float32, "cpu"))
    hidden = global_tensors(ckpt, torch.float32, plan, names=("model.embed_tokens.weight",))
    x = probe.embed(hidden, torch.tensor([ids]))
    with torch.no_grad():
        probe.build_layer(0, config, tensors[0]).run(x, torch.arange(len(ids))[None])
    gate_up = torch.cat(probe.seen)
    gate, up, limit = gate_up[:, 0::2], gate_up[:, 1::2], config.swiglu_limit
    assert float(gate.max()) > limit and float(gate.min()) < -limit and float(up.abs().max()) > limit
    assert load_mutant(MUTANTS_DIR / "b18_no_swiglu_clamp.py").EXPECT.component == "moe"
