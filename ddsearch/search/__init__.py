"""The search service: a study on Ray Tune + Optuna, tracked in MLflow.

- :mod:`ddsearch.search.space`    study ``search`` -> Optuna distributions, samplers, the first trial,
                                  and the Tune searcher (OptunaSearch with persistent storage)
- :mod:`ddsearch.search.trial`    the Tune trainable (one trial = one distillation + evaluation)
- :mod:`ddsearch.search.tune`     ``ddsearch tune``: validation, tracking server, Tuner, resume, the end
- :mod:`ddsearch.search.cluster`  Ray: an existing cluster by address, or a local Ray
- :mod:`ddsearch.search.report`   ``ddsearch report`` (leaderboard) and ``ddsearch ui``
- :mod:`ddsearch.search.docs`     the study keys as markdown tables (for the README)
- :mod:`ddsearch.search.guard`    runs a helper process (the MLflow server) only while its owner lives
- :mod:`ddsearch.search.parallel` Ray task fan-out used by ``ddsearch nas``

Nothing here is imported by the library's core; only this package imports Ray.
"""
