"""trait_pipeline/__init__.py: non-actionable library warnings are filtered in one place."""

import subprocess
import sys


def test_non_actionable_warnings_are_silenced_and_others_are_not():
    code = ("import warnings, trait_pipeline\n"
            "warnings.warn('`is_gradient_checkpointing` is deprecated', FutureWarning)\n"
            "warnings.warn('Could not find a config file in /x - will assume', UserWarning)\n"
            "warnings.warn('something a user should see', UserWarning)\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stderr
    assert "is_gradient_checkpointing" not in err and "Could not find a config" not in err
    assert "something a user should see" in err
