"""The one exception type for bad input: its message is a single line for the user.

>>> raise PipelineError("unknown method 'foo'; expected one of: mean_diff, probe")
Traceback (most recent call last):
...
trait_pipeline.errors.PipelineError: unknown method 'foo'; expected one of: mean_diff, probe
"""


class PipelineError(ValueError):
    """Bad input or state that the user can fix; printed as ``error: <message>``, exit 2."""


def one_line(message: object) -> str:
    """``message`` on one line, with credentials masked (a server may echo the API key)."""
    from .safety.secrets import redact

    return " ".join(redact(message).split())
