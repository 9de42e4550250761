"""huggingface_hub and network exceptions -> one-line InputError / IntegrityError, each with the fix; the token is
never printed (docs/download.md lists every case)."""

import json

from gptoss_convert.errors import GptossConvertError, InputError, IntegrityError

class hub_errors:  # noqa: N801 (used like a function: `with hub_errors(...)`)
    """Context manager turning huggingface_hub / network exceptions into InputError / IntegrityError."""

    def __init__(self, repo_id: str, revision: str, endpoint: str):
        self.repo_id, self.revision, self.endpoint = repo_id, revision, endpoint

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or isinstance(error, (GptossConvertError, KeyboardInterrupt)):
            return False
        translated = self.translate(error)
        if translated is None:
            return False
        raise translated from error

    def translate(self, error: BaseException) -> GptossConvertError | None:
        import httpx2
        from huggingface_hub import get_token
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        repo, where = self.repo_id, self.endpoint
        token = get_token()
        token_hint = (
            "check that the token in HF_TOKEN (or from `hf auth login`) is valid and has read access"
            if token
            else "log in with `hf auth login` or set HF_TOKEN"
        )
        if isinstance(error, RevisionNotFoundError):
            message = f"revision {self.revision!r} not found in {repo} on {where} (use a branch, tag or commit sha)"
        elif isinstance(error, GatedRepoError):
            message = f"{repo} on {where} is gated: accept its terms at {where}/{repo}, then {token_hint}"
        elif isinstance(error, RepositoryNotFoundError):
            message = f"repository {repo} not found on {where} (check the name; if it is private, {token_hint})"
        elif isinstance(error, HfHubHTTPError) and _status(error) in (401, 403):
            message = f"{where} refused access to {repo} (HTTP {_status(error)}): {token_hint}"
        elif isinstance(error, HfHubHTTPError):
            message = (
                f"{where} answered HTTP {_status(error)} for {repo}: try again later, or set HF_ENDPOINT to a mirror"
            )
        elif isinstance(error, (httpx2.TransportError, LocalEntryNotFoundError, OfflineModeIsEnabled)):
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            message = (
                f"cannot reach {where} ({type(error).__name__}: {reason[:160]}): check the network; "
                "HF_ENDPOINT can point at a mirror, and HF_HUB_OFFLINE=1 uses what is already downloaded"
            )
        elif isinstance(error, OSError) and "Consistency check failed" in str(error):
            first_line = str(error).splitlines()[0]
            return IntegrityError(f"a download from {where} ended at the wrong size ({first_line}); re-run the command")
        elif isinstance(error, OSError):
            target = f" to {error.filename}" if error.filename else ""
            message = (f"cannot write the download{target}: {error.strerror or error}; "
                       "expected a writable --local-dir with free space")
        elif isinstance(error, (json.JSONDecodeError, KeyError)):
            reason = f"{type(error).__name__}: {str(error)[:160]}"
            message = f"{where} does not answer like a Hugging Face Hub ({reason}); check HF_ENDPOINT"
        else:
            return None
        return InputError(message.replace(token, "***") if token else message)


def _status(error) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)
