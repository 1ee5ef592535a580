"""``python -m trait_pipeline.diff`` = ``trait-pipeline diff``; the code is :mod:`trait_pipeline.review.diff`."""

from trait_pipeline.review.diff import main

if __name__ == "__main__":
    raise SystemExit(main())
