"""A study's state folder (``state_dir``, default ``./.ddsearch/<study name>``).

::

    .ddsearch-owned  marker: ddsearch created this folder (it deletes only folders it made)
    study.json       the study as it started (a resume must match it)
    overrides.json   the --set overrides it started with (the resume hint repeats them)
    tracking.json    store URI, experiment id and parent run id
    session.json     the running driver's live tracking context (for Tune's callback); gone after it
    optuna.db        the Optuna study (SQLite), unless sampler.storage names a database
    ray/<name>/      Ray Tune's experiment: trial results and checkpoints
    mlflow-server.log

The folder is created with mode 0700, and a resume refuses a folder another user owns or can
write to: Ray Tune unpickles ``tuner.pkl`` and the searcher state from it. This module owns the
file names; ``report`` reads the tracking record through it too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsearch.atomic_files import write_text_atomic
from ddsearch.config import Study
from ddsearch.errors import DDSearchError
from ddsearch.paths import MARKER, check_owner, make_owned_dir, remove_owned_dir
from ddsearch.search import storage

if TYPE_CHECKING:
    from ddsearch.search.plan import Plan

STUDY_FILE = "study.json"
OVERRIDES_FILE = "overrides.json"
TRACKING_FILE = "tracking.json"
SESSION_FILE = "session.json"
OPTUNA_FILE = "optuna.db"
SERVER_LOG = "mlflow-server.log"


def check_state_dir(state: Path) -> None:
    """The state folder must be ours to write (and, since a resume unpickles from it, nobody else's).

    A folder that exists is accepted when ddsearch made it (marker, or an older study.json), or
    when it is empty; anything else is some other folder that a fresh start might clear.
    """
    if state.exists():
        if not state.is_dir():
            raise DDSearchError(f"state_dir {state} is a file, not a folder")
        check_owner(state, "state folder")
        known = (state / MARKER).is_file() or (state / STUDY_FILE).is_file()
        if not known and any(state.iterdir()):
            raise DDSearchError(f"state_dir {state} is a folder ddsearch did not create and it is not empty; "
                                f"choose an empty or new folder for state_dir")
        if not os.access(state, os.W_OK | os.X_OK):
            raise DDSearchError(f"the state folder {state} is not writable; fix its permissions or set state_dir")
        return
    parent = state.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise DDSearchError(f"cannot create the state folder {state}: {parent} is not writable; set state_dir "
                            f"(or run from a folder you can write to)")


def _fingerprint(study: Study) -> dict[str, Any]:
    return study.model_dump(mode="json", exclude={"tracking", "state_dir"})


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if old == new else [f"{path} (was {old!r}, now {new!r})"]


def prepare_state(plan: Plan, resume: bool) -> bool:
    """Make the state folder ready; True when Tune's experiment is restored (a resume)."""
    from ray.tune import Tuner

    state = plan.state_dir
    check_state_dir(state)
    restorable = plan.ray_dir.is_dir() and Tuner.can_restore(str(plan.ray_dir))
    if restorable and not resume:
        raise DDSearchError(
            f"study '{plan.study.name}' has already run (state in {state}); add --resume to finish it "
            f"(`{plan.command('--resume')}`), `ddsearch report` to see it, or remove that folder "
            f"(or change `name`) to start over"
        )
    if restorable:
        check_owner(state, "state folder")
        check_owner(plan.ray_dir, "Ray Tune state folder")
        saved = state / STUDY_FILE
        if saved.is_file():
            diffs = _differences(json.loads(saved.read_text()), _fingerprint(plan.study))
            if diffs:
                raise DDSearchError(
                    f"the study changed since it started: {'; '.join(diffs[:3])}; resume it unchanged "
                    f"or start a new study under another name"
                )
        return True
    if resume:
        print(f"nothing to resume for study '{plan.study.name}' in {state}; starting it from the beginning")
    # A fresh start; leftovers of an attempt that died before Tune saved anything are cleared, but
    # only folders ddsearch made (marker file), inside the state folder.
    make_owned_dir(state)
    os.chmod(state, 0o700)  # Ray's pickles live here
    remove_owned_dir(plan.ray_dir, within=state)
    storage.clear(plan.optuna_storage, plan.study.name)
    make_owned_dir(plan.ray_dir.parent)
    make_owned_dir(plan.ray_dir)
    (state / STUDY_FILE).write_text(json.dumps(_fingerprint(plan.study), indent=2))
    (state / OVERRIDES_FILE).write_text(json.dumps(list(plan.overrides), indent=2))
    return False


# ---- the tracking record: which parent run is this study's ------------------------------------

def recorded_parent(state: Path, uri: str) -> str | None:
    """The parent run id recorded for ``uri`` (None: no record, or a record for another store)."""
    meta_path = state / TRACKING_FILE
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    return meta.get("parent_run_id") if meta.get("store_uri") == uri else None


def previous_parent(state: Path, uri: str) -> str | None:
    """The parent run a resume reopens; a record for another store is an error, not a fresh start."""
    meta_path = state / TRACKING_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if not meta.get("parent_run_id"):
        return None
    if meta.get("store_uri") != uri:
        raise DDSearchError(
            f"this study tracks to {meta.get('store_uri')}, not {uri}; resume it with the same tracking.uri"
        )
    return meta["parent_run_id"]


def record_parent(state: Path, uri: str, experiment_id: str, parent_run_id: str) -> None:
    meta = {"store_uri": uri, "experiment_id": experiment_id, "parent_run_id": parent_run_id}
    (state / TRACKING_FILE).write_text(json.dumps(meta, indent=2))


# ---- the live session: what Tune's callback needs from the running driver ---------------------
# Tune pickles its callbacks into the experiment state and a resume unpickles them, so a callback
# must not hold the tracking URI of a server from an earlier session; it reads this file instead.

def write_session(state: Path, session: dict[str, Any]) -> None:
    write_text_atomic(state / SESSION_FILE, json.dumps(session))


def read_session(state: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state / SESSION_FILE).read_text())
    except (OSError, ValueError):
        return None


def clear_session(state: Path) -> None:
    (state / SESSION_FILE).unlink(missing_ok=True)
