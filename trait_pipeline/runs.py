"""``python -m trait_pipeline.runs`` = ``trait-pipeline runs``; the code is :mod:`trait_pipeline.review.runs`."""

from trait_pipeline.review.runs import main

if __name__ == "__main__":
    raise SystemExit(main())
