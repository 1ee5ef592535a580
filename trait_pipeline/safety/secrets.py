"""Credentials never reach disk: env allowlisting for sweeps, and redaction of messages.

A sweep's jobs need some of the submitting shell's environment (``TRAIT_PIPELINE_EXPERIMENTS``
decides where outputs go). The launchers used to pickle every ``HF_*`` variable, ``HF_TOKEN``
included, into the sweep folder. :func:`job_env` keeps only non-secret names; secrets reach a
job at run time from its own environment (a local worker inherits it, ``sbatch`` exports it).

>>> is_secret_name("HF_TOKEN"), is_secret_name("OPENAI_API_KEY"), is_secret_name("HF_HOME")
(True, True, False)
>>> job_env({"HF_HOME": "/h", "HF_TOKEN": "hf_x", "TRAIT_PIPELINE_CACHE": "/c", "PATH": "/bin"})
{'HF_HOME': '/h', 'TRAIT_PIPELINE_CACHE': '/c'}
>>> redact("401: bad key Bearer sk-abc123 for sk-abc123", secrets=["sk-abc123"])
'401: bad key Bearer *** for ***'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

# variables a job may need from the submitting shell: where things are, offline switches
JOB_ENV_PREFIXES = ("TRAIT_PIPELINE_", "HF_", "TRANSFORMERS_")
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION",
                          re.IGNORECASE)
# values that are credentials whatever their variable is called (hub and API key prefixes)
_SECRET_VALUE = re.compile(r"^(hf_|sk-|sk_|ghp_|gho_|github_pat_|xox[abp]-)")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{4,}")
_INLINE_KEY = re.compile(r"\b(hf_|sk-|ghp_|github_pat_)[A-Za-z0-9_-]{6,}")
MIN_SECRET_LEN = 6  # shorter values would blank out ordinary words
MASK = "***"


def is_secret_name(name: str) -> bool:
    """True for names like ``HF_TOKEN``, ``OPENAI_API_KEY``, ``DB_PASSWORD``."""
    return bool(_SECRET_NAME.search(name))


def looks_secret(name: str, value: str) -> bool:
    return is_secret_name(name) or bool(_SECRET_VALUE.match(value or ""))


def job_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a sweep hands its jobs: allowlisted prefixes, never a credential."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items()
            if k.startswith(JOB_ENV_PREFIXES) and not looks_secret(k, v)}


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of this process's credential-like variables, longest first."""
    env = os.environ if environ is None else environ
    vals = {v for k, v in env.items() if v and len(v) >= MIN_SECRET_LEN and looks_secret(k, v)}
    return sorted(vals, key=len, reverse=True)


def redact(text: object, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every known secret value, ``Bearer ...`` and key-shaped token masked.

    ``secrets`` defaults to the credential-like variables of the environment, so a server
    that echoes the API key in its error body does not put it on the ``error:`` line.
    """
    out = str(text)
    for value in secret_values() if secrets is None else secrets:
        if value and len(value) >= 3:
            out = out.replace(value, MASK)
    out = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", out)
    return _INLINE_KEY.sub(MASK, out)
