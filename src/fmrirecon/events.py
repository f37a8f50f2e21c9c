"""A run's events: which rows are stimulus trials, which image each shows, which split.

:func:`read_trials` is the one reader of a run's events: which rows are stimulus
trials (config ``design.exclude``, rows without a stimulus), which image each shows
(config ``stimuli``, through :class:`fmrirecon.stimuli.StimulusResolver`) and which
split each belongs to (by task, session or an events column, :func:`run_splits`).
The pre-flight check (:mod:`fmrirecon.preflight`) and the GLM job both call it, so
they agree on every trial.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .bids import Problems, _first_problem
from .stimuli import StimulusResolver, _is_number

SPLITS = ("train", "test", "imagery")
#: Defaults of the config section ``design`` (the schema repeats them).
DESIGN_DEFAULTS = {
    "split_by": "task",
    "train_tasks": ["train"], "test_tasks": ["test"], "imagery_tasks": ["imagery"],
    "train_sessions": [], "test_sessions": [], "imagery_sessions": [],
    "split_column": None,
    "split_values": {"train": ["train"], "test": ["test"], "imagery": ["imagery"]},
    "tasks": [],
    "exclude": {},
    "exclude_split": {},
    "allow_test_in_train": False,
}


def design_settings(design: dict | None) -> dict:
    """The config section ``design`` over :data:`DESIGN_DEFAULTS`."""
    return {**DESIGN_DEFAULTS, **(design or {})}


def _matches(label: str, patterns) -> bool:
    """A session label against glob patterns, or regular expressions written ``re:<regex>``."""
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.fullmatch(pattern[3:], label):
                return True
        elif fnmatch.fnmatchcase(label, pattern):
            return True
    return False


def run_splits(row, design: dict) -> list[str]:
    """The splits a run's trials may go to, from its task or session (``design.split_by``).

    ``split_by: column`` gives every split (each trial's own value decides); a run
    whose task is not in ``design.tasks`` (when given) gets none. Several splits for a
    ``task`` or ``session`` rule mean the config puts the run in two splits.
    """
    design = design_settings(design)
    get = row.get if isinstance(row, dict) else lambda k, d="": getattr(row, k, d)
    task, session = str(get("task", "")), str(get("session", "") or "")
    if design["tasks"] and task not in design["tasks"]:
        return []
    by = design["split_by"]
    if by == "task":
        return [s for s in SPLITS if task in design[f"{s}_tasks"]]
    if by == "session":
        return [s for s in SPLITS if _matches(session, design[f"{s}_sessions"])]
    if by == "column":
        return list(SPLITS)
    raise ValueError(f"config['design']['split_by']: {by!r} is not task, session or column")



def _numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def read_trials(path: str | Path, design: dict, resolver: StimulusResolver,
                splits: list[str] | None = None, n_volumes: int | None = None,
                tr: float | None = None, problems: Problems | None = None,
                counts: dict | None = None) -> pd.DataFrame | None:
    """The stimulus trials of one run's events file.

    Rows matching ``design.exclude`` (column -> values, e.g. ``{trial_type: [rest]}``)
    and rows without a stimulus id are not stimulus trials and are dropped; with
    ``design.split_by: column`` rows whose value is in no split are dropped too. Dropped
    rows that still name an image (one-back repetitions, cues, practice trials: something
    was on the screen) are returned in ``attrs["nuisance"]`` (``(onset, duration)`` pairs):
    the GLM models them together as one regressor, so that their responses do not leak
    into the trials' betas.

    Parameters
    ----------
    path : path
        BIDS ``_events.tsv``.
    design : dict
        Config section ``design`` (:func:`design_settings`).
    resolver : StimulusResolver
        The stimuli folder and lookup table.
    splits : list of str, optional
        The run's splits (:func:`run_splits`); one split for task or session rules.
    n_volumes, tr : optional
        The run's length, to check onsets against.
    problems : Problems, optional
        Collects every problem of the file; without it the first raises
        :class:`BIDSInputError`.
    counts : dict, optional
        Incremented with ``excluded``, ``no_stimulus`` and ``no_split`` row counts.

    Returns
    -------
    DataFrame or None
        ``onset``, ``duration`` (float), ``stim_id``, ``stim_file`` (relative to the
        stimuli folder), ``split``, sorted by onset, with ``attrs["nuisance"]``; None
        when the file has problems.
    """
    collect, raise_now = _first_problem(problems)
    before = len(collect)
    path = Path(path)
    design = design_settings(design)
    column = resolver.spec["column"]
    # 1. the table, stripped, each row numbered by its line
    events = _read_events(path, design, column, collect)
    if events is None:
        return _done(collect, raise_now, before)
    # 2. the stimulus trials and their split; the dropped rows that showed an image
    trials, shown, keep = _select_trials(events, design, splits, path, column, collect, counts)
    # 3. onsets and durations
    _check_timing(events, trials, keep, path, n_volumes, tr, collect)
    # 4. each trial's image file
    files = _resolve_files(trials[column], resolver, path, collect)
    if len(collect) > before:
        return _done(collect, raise_now, before)
    # 5. the table, and the nuisance events
    out = pd.DataFrame({
        "onset": trials["onset"].to_numpy(float), "duration": trials["duration"].to_numpy(float),
        "stim_id": trials[column].to_numpy(str), "stim_file": np.asarray(files, dtype=str),
        "split": trials["split"].to_numpy(object),
    })
    out = out.sort_values("onset", kind="stable").reset_index(drop=True)
    onset, duration = _numeric(shown["onset"]), _numeric(shown["duration"])
    valid = (onset >= 0) & (duration >= 0)  # other rows are not trials: no need to refuse them
    if n_volumes is not None and tr is not None and np.isfinite(tr) and tr > 0:
        valid &= onset < n_volumes * tr
    # a tuple: pandas compares attrs when it concatenates frames
    out.attrs["nuisance"] = tuple(zip(onset[valid].astype(float), duration[valid].astype(float)))
    if counts is not None:
        counts["modelled"] = counts.get("modelled", 0) + int(valid.sum())
    return out


def _read_events(path: Path, design: dict, column: str, collect: Problems) -> pd.DataFrame | None:
    """The events table as strings, stripped, with ``_row`` (its line); None on a problem."""
    if not path.is_file():
        collect.add(path, "events file missing; every run in a split needs its _events.tsv "
                    "(or leave its task out with design.tasks, or its session out of the split)")
        return None
    try:
        events = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        collect.add(path, "empty file; write a header (onset, duration, "
                    f"{column}) and one row per event")
        return None
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        collect.add(path, f"cannot read as a tab-separated table ({str(err).splitlines()[0]})")
        return None
    events.columns = [str(c).strip() for c in events.columns]
    events = events.apply(lambda values: values.str.strip())  # "2.0 " and " a.png" are 2.0 and a.png
    needed = ["onset", "duration", column] + ([design["split_column"]] if design["split_by"] == "column" else [])
    missing = [c for c in needed if c not in events.columns]
    if missing:
        hint = (" (set stimuli.column to the events column naming the image)"
                if column in missing else "")
        collect.add(path, f"missing column(s) {', '.join(missing)}{hint}; it has {list(events.columns)}")
        return None
    if events.empty:
        collect.add(path, "no events (header only); every run needs its stimulus trials")
        return None
    events["_row"] = np.arange(len(events)) + 2  # line number in the file (header is 1)
    return events


def _select_trials(events: pd.DataFrame, design: dict, splits, path: Path, column: str,
                   collect: Problems, counts: dict | None):
    """The stimulus trials (with ``split``), the dropped rows that named an image, and
    which rows of ``events`` passed ``design.exclude`` with a stimulus."""
    keep = ~_excluded(events, design["exclude"] or {}, path, "design.exclude", collect)
    n_excluded = int((~keep).sum())
    stim = events[column].str.strip()
    named = ~stim.isin(["", "n/a", "nan", "NaN"]).to_numpy()
    no_stim = ~named & keep
    keep &= ~no_stim
    shown = events[named & ~keep]  # excluded rows that put an image on the screen
    trials = events[keep].copy()
    trials[column] = trials[column].str.strip()

    if design["split_by"] == "column":
        value_split = {str(v): s for s, values in design["split_values"].items() for v in values}
        trials["split"] = trials[design["split_column"]].str.strip().map(value_split)
        n_no_split = int(trials["split"].isna().sum())
        shown = pd.concat([shown, trials[trials["split"].isna()]])
        trials = trials[trials["split"].notna()]
    else:
        n_no_split = 0
        trials["split"] = splits[0] if splits else None
    for split, rules in (design["exclude_split"] or {}).items():
        drop = (trials["split"] == split).to_numpy() & _excluded(
            trials, rules, path, f"design.exclude_split.{split}", collect)
        n_excluded += int(drop.sum())
        shown = pd.concat([shown, trials[drop]])
        trials = trials[~drop]
    if counts is not None:
        counts["excluded"] = counts.get("excluded", 0) + n_excluded
        counts["no_stimulus"] = counts.get("no_stimulus", 0) + int(no_stim.sum())
        counts["no_split"] = counts.get("no_split", 0) + n_no_split
    return trials, shown, keep


def _check_timing(events: pd.DataFrame, trials: pd.DataFrame, keep: np.ndarray, path: Path,
                  n_volumes, tr, collect: Problems) -> None:
    """Numeric, non-negative onsets and durations (made float in ``trials``), no repeated
    row or onset, no onset past the end of the run."""
    for col in ("onset", "duration"):
        values = _numeric(trials[col])
        bad = trials.loc[values.isna().to_numpy(), ["_row", col]]
        if len(bad):
            shown = ", ".join(f"line {r} {v!r}" for r, v in bad.head(3).itertuples(index=False))
            collect.add(path, f"{col} must be a number in seconds for every stimulus trial; got {shown}")
        negative = trials.loc[(values < 0).to_numpy(), ["_row", col]]
        if len(negative):
            shown = ", ".join(f"line {r} {v}" for r, v in negative.head(3).itertuples(index=False))
            collect.add(path, f"negative {col} ({shown}); onsets count from the first stored "
                        "volume and durations must be >= 0")
        trials[col] = values.astype(float)
    duplicated = events.drop(columns="_row").duplicated(keep="first") & pd.Series(keep, index=events.index)
    if duplicated.any():
        lines = (events.loc[duplicated, "_row"]).tolist()[:5]
        collect.add(path, f"row(s) repeated verbatim at line(s) {lines}; delete the copies")
    else:
        same_onset = trials["onset"].duplicated(keep=False) & trials["onset"].notna()
        if same_onset.any():
            shown = trials.loc[same_onset, ["_row", "onset"]].head(4)
            collect.add(path, "two stimulus trials at the same onset ("
                        + ", ".join(f"line {r}: {o:g} s" for r, o in shown.itertuples(index=False))
                        + "); their regressors are identical and their betas meaningless. "
                          "Fix the onsets, or drop the extra rows with design.exclude")
    if n_volumes is not None and tr is not None and np.isfinite(tr) and tr > 0:
        length = n_volumes * tr
        late = trials.loc[(trials["onset"] >= length).to_numpy(), ["_row", "onset"]]
        if len(late):
            shown = ", ".join(f"line {r}: {o:g} s" for r, o in late.head(3).itertuples(index=False))
            collect.add(path, f"onset(s) past the end of the run ({shown}; the run lasts "
                        f"{n_volumes} volumes x TR {tr:g} s = {length:g} s); check the "
                        "onsets' units (seconds) and the sidecar's RepetitionTime")


def _resolve_files(stim_ids: pd.Series, resolver: StimulusResolver, path: Path,
                   collect: Problems) -> list:
    """The image file of each stimulus id (None where it does not resolve)."""
    files = []
    unresolved = {}
    for stim_id in stim_ids:
        file, reason = resolver.resolve(stim_id)
        files.append(file)
        if file is None:
            unresolved.setdefault(reason, 0)
            unresolved[reason] += 1
    for reason in list(unresolved)[:5]:
        collect.add(path, reason)
    return files


def _excluded(events: pd.DataFrame, rules: dict, path, key: str, collect: Problems) -> np.ndarray:
    """Rows whose value in a column is one of the rule's values (``1`` and ``1.0`` are
    one value)."""
    drop = np.zeros(len(events), dtype=bool)
    for col, values in rules.items():
        if col not in events:
            collect.add(path, f"no column {col!r} for config {key}; it has "
                        f"{[c for c in events.columns if c != '_row']}")
            continue
        hit = events[col].str.strip().isin([str(v) for v in values])
        numeric = _numeric(events[col])
        wanted = [float(v) for v in values if _is_number(v)]
        hit |= numeric.isin(wanted) & numeric.notna()
        drop |= hit.to_numpy()
    return drop


def _done(collect: Problems, raise_now: bool, before: int):
    if raise_now and len(collect) > before:
        collect.raise_if_any()
    return None
