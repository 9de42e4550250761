"""gptoss-convert: download, convert and verify gpt-oss checkpoints against Hugging Face Transformers."""

__version__ = "0.1.0"
