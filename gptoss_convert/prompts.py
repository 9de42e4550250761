"""Chat prompts: our own harmony chat template (data/chat_template.jinja), shipped as `chat_template.jinja` in every
checkpoint scripts/make_checkpoint.py writes, and the rendering of conversations through a checkpoint's template."""

from importlib import resources
from pathlib import Path

CHAT_TEMPLATE_FILE = "chat_template.jinja"


def harmony_template_path() -> Path:
    """Our harmony chat template (not OpenAI's text: written from the format's public description)."""
    return Path(str(resources.files("gptoss_convert") / "data" / CHAT_TEMPLATE_FILE))
