"""The search service: a study on Ray Tune + Optuna, tracked in MLflow.

A study's way through, one module per stage (:mod:`ddsearch.search.tune` reads top-down):

- :mod:`ddsearch.search.plan`     validation before any trial starts, the printed plan (``--dry-run``)
- :mod:`ddsearch.search.state`    the state folder: its files, resume checks, the live session
- :mod:`ddsearch.search.parent`   the study's parent run: created once, reopened by a resume
- :mod:`ddsearch.search.tuner`    Ray Tune: scheduler, Tuner (new or restored), the run-closing callback
- :mod:`ddsearch.search.trial`    the Tune trainable (one trial = one distillation + evaluation)
- :mod:`ddsearch.search.finalize` the end: leaderboard, best trial, plots; or the state kept for --resume
- :mod:`ddsearch.search.space`    study ``search`` -> Optuna distributions, samplers, the Tune searcher
- :mod:`ddsearch.search.cluster`  Ray: an existing cluster by address, or a local Ray
- :mod:`ddsearch.search.leaderboard`, :mod:`.notes`, :mod:`.plots`, :mod:`.report_page`  what a study shows
- :mod:`ddsearch.search.parallel` Ray task fan-out used by ``ddsearch nas``

Nothing here is imported by the library's core; only this package imports Ray.
"""
