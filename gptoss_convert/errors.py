"""Typed errors. Each carries the exit code the CLI returns; the message is one line naming the file, tensor or
option and what was expected. Library code raises these and never calls sys.exit."""


class GptossConvertError(Exception):
    """Base class: a user-facing, one-line error."""

    exit_code = 2

    def __init__(self, message: str = "", *args):
        # Names read from files (tensor names, config keys) may hold line breaks; the message stays one line.
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"), *args)


class ParityError(GptossConvertError):
    """The implementation under test does not match the reference (verify's gate failed)."""

    exit_code = 1


class InputError(GptossConvertError):
    """Bad usage or input: a bad option value, a missing download, an unreachable hub, a malformed config."""

    exit_code = 2


class IntegrityError(GptossConvertError):
    """A checkpoint or download is damaged or inconsistent: truncated file, bad header, wrong shape, bad checksum."""

    exit_code = 3


class CandidateError(GptossConvertError):
    """An implementation under test (a --candidate or --reference) failed: it cannot be imported or built (exit 2),
    or it raised or returned something unusable while running (exit 1: wrong numbers, naming the component)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
