"""trait_pipeline.safety.secrets: what a sweep may carry to its jobs, and redaction."""

from __future__ import annotations

import cloudpickle

from trait_pipeline.errors import one_line
from trait_pipeline.safety.secrets import is_secret_name, job_env, redact


def test_credential_names_are_recognised():
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY",
                 "DB_PASSWORD", "GOOGLE_APPLICATION_CREDENTIALS", "hf_auth"):
        assert is_secret_name(name), name
    for name in ("HF_HOME", "TRAIT_PIPELINE_EXPERIMENTS", "TRANSFORMERS_OFFLINE", "HF_HUB_OFFLINE"):
        assert not is_secret_name(name), name


def test_job_env_keeps_paths_and_switches_never_credentials():
    env = {"HF_HOME": "/h", "HF_TOKEN": "hf_secret_value", "HF_HUB_OFFLINE": "1",
           "TRAIT_PIPELINE_EXPERIMENTS": "/x", "TRANSFORMERS_CACHE": "/t",
           "TRAIT_PIPELINE_NOTE": "sk-looks-like-a-key", "OPENAI_API_KEY": "sk-abc", "PATH": "/bin"}
    out = job_env(env)
    assert out == {"HF_HOME": "/h", "HF_HUB_OFFLINE": "1", "TRAIT_PIPELINE_EXPERIMENTS": "/x",
                   "TRANSFORMERS_CACHE": "/t"}
    assert b"secret_value" not in cloudpickle.dumps(out)


def test_redaction_masks_env_secrets_bearer_and_key_shapes(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "plain-value-123")
    text = ("HTTP 401: invalid key plain-value-123 (header was 'Authorization: Bearer abc.def-ghi'); "
            "also hf_AbCdEf123456 and sk-proj-XYZ123456")
    out = redact(text)
    for secret in ("plain-value-123", "abc.def-ghi", "hf_AbCdEf123456", "sk-proj-XYZ123456"):
        assert secret not in out
    assert "HTTP 401: invalid key ***" in out and "Bearer ***" in out
    # every `error:` line goes through one_line, so it is redacted too
    assert "plain-value-123" not in one_line(text)
    # ordinary words are left alone
    assert redact("the token limit of 24 tokens; a key finding") == "the token limit of 24 tokens; a key finding"
