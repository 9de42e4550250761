"""The one error type of the training package: bad training input (data, reward function, options).

It subclasses ValueError so plain Python callers can catch it as one; `scripts/train.py` turns it into a one-line
`error: ...` and exit code 2, the project's code for usage and input errors (docs/reliability.md).
"""


class TrainingInputError(ValueError):
    """Training cannot go on with this input; the message is one line naming what was wrong and what was expected."""
