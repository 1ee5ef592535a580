"""The dashboard's live chat: answers streamed token by token with each watched trait's
projection, on any model variant of an experiment (``python -m trait_pipeline.serve``).

* :mod:`.experiments`: which variants an experiment defines (its ``variants:`` table).
* :mod:`.pool`: models loaded on first use, at most N resident, one generation per model.
* :mod:`.engine`: the prompt for a conversation, and the per-token events of an answer
  (:func:`~trait_pipeline.token_capture.stream_capture` + :mod:`trait_pipeline.projection`).
* :mod:`.routes`: the HTTP endpoints (Server-Sent Events) mounted by :mod:`trait_pipeline.serve`.
"""
