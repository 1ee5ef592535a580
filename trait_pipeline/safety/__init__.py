"""Hardening helpers shared by every stage: secrets kept off disk, file modes, write checks.

* :mod:`.secrets` — which environment variables a sweep may carry to its jobs, and redaction
  of credentials from any text that can reach a log, a terminal or a file.
* :mod:`.files` — file modes that follow the umask, and the writability checks that turn a
  read-only or full experiments folder into one ``error:`` line.
"""
