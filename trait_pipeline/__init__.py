"""trait-pipeline: extract, steer with and monitor trait vectors across model variants.

Importing the package is cheap on purpose (no torch): the Hydra entry points must answer
``--help`` and ``--cfg job`` in well under a second.
"""

import warnings

__version__ = "0.1.0"

# Library warnings a user can do nothing about, silenced in this one place for every stage
# (the package is imported before any library that raises them). (category, message regex)
NON_ACTIONABLE_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # peft calls a transformers API that v5 deprecates
    (FutureWarning, r".*is_gradient_checkpointing.*"),
    # peft looks for the base model's config.json to compare vocab sizes; a local or
    # offline base model has none on the hub
    (UserWarning, r"Could not find a config file in .*"),
)
for _category, _message in NON_ACTIONABLE_WARNINGS:
    warnings.filterwarnings("ignore", message=_message, category=_category)
