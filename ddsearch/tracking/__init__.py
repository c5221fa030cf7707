"""MLflow, and everything ddsearch knows about it: the only package that imports MLflow.

- :mod:`.store`       URI, client, experiments, run fields and artifacts (plain functions)
- :mod:`.server`      the study's tracking server and ``ddsearch ui``'s server, both under the guard
- :mod:`.guard`       runs a helper process (an MLflow server) only while its owner lives
- :mod:`.run_logger`  the Observer that records one distillation run
- :mod:`.study_runs`  :class:`StudyRuns`: the one owner of run lifecycles and ``ddsearch.*`` tags
- :mod:`.lookup`      queries over recorded studies: parent runs, the best trial for NAS

Nothing here imports torch or the run engine, so ``report`` and ``ui`` stay light.
"""
