"""gptoss-convert: download, convert and verify gpt-oss checkpoints against Hugging Face Transformers.

    import gptoss_convert
    model = gptoss_convert.load_model("tiny")                    # the embedded tiny checkpoint, float32
    model = gptoss_convert.load_model("20b", dtype="bfloat16")   # after `gptoss-convert download --model 20b`
    model = gptoss_convert.load_model("/path/to/checkpoint")     # HF layout, original/, or our own format
"""

__version__ = "0.1.0"


def load_model(source="tiny", dtype=None, device="cpu"):
    """A GPTOssModelFull filled from `source`: "tiny", a downloaded model name ("20b", "120b"), or a directory in
    any supported layout (official HF, OpenAI original/, our own format). `dtype`: a torch dtype or "float32" /
    "bfloat16" (default float32). Parameters are filled one tensor at a time into a model built on the meta
    device, so peak memory stays close to the model's own size. Raises InputError (missing model, bad option) or
    IntegrityError (damaged checkpoint)."""
    from gptoss_convert.load import load_model as _load_model  # torch is imported only here

    return _load_model(source, dtype=dtype, device=device)


def tiny_checkpoint_dir():
    """The directory of the embedded tiny gpt-oss checkpoint (official layout; read-only)."""
    from gptoss_convert.tiny import tiny_checkpoint_dir as _tiny_checkpoint_dir

    return _tiny_checkpoint_dir()
