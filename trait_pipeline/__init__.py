"""trait-pipeline: extract, steer with and monitor trait vectors across model variants.

Importing the package is cheap on purpose (no torch): the Hydra entry points must answer
``--help`` and ``--cfg job`` in well under a second.
"""

__version__ = "0.1.0"
