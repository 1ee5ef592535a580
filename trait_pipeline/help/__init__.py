"""Stage help: ``trait-pipeline <stage> --help``, built from the stage's YAML comments."""

from .stage_help import KeyDoc, StageDoc, format_help, keys_markdown, stage_doc

__all__ = ["KeyDoc", "StageDoc", "format_help", "keys_markdown", "stage_doc"]
