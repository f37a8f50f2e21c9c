"""Method settings: the one-line error for an unknown key, and the ``validation`` setting.

Every method entry's keys are checked before any job (an unknown key names its closest
match); the ``validation`` key every entry takes is described here
(:mod:`fmrirecon.validation` acts on it).
"""

from __future__ import annotations

from ..config import unknown_key_message  # the methods import it from here


class SettingsError(ValueError):
    """A method setting that does not exist or has a bad value."""


#: The keys of a method entry's ``validation`` setting and their defaults.
VALIDATION_DEFAULTS = {
    "enabled": True,
    "fraction": 0.2,       # of the runs held out (one split)
    "folds": None,         # None: 1 split of runs, or 5 folds of images without runs
    "metric": "pixcorr",   # or ident2
    "search": None,        # {setting: [values]}; None: the method's declared search
    "baseline": "pca",     # null: no baseline guard
}

#: Metrics the choice can be made on.
METRICS = ("pixcorr", "ident2")


def validation_settings(value, where: str = "validation") -> dict:
    """The ``validation`` setting of a method entry with its defaults filled.

    ``False`` disables validation; ``None`` or a dict of :data:`VALIDATION_DEFAULTS`
    keys. Raises ValueError naming an unknown key or a bad value.
    """
    if value is False:
        return {**VALIDATION_DEFAULTS, "enabled": False}
    if value is None or value is True:
        return dict(VALIDATION_DEFAULTS)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping or false, got {value!r}")
    for key in value:
        if key not in VALIDATION_DEFAULTS:
            raise ValueError(unknown_key_message(where, key, VALIDATION_DEFAULTS))
    out = {**VALIDATION_DEFAULTS, **value}
    if not 0 < float(out["fraction"]) < 1:
        raise ValueError(f"{where}.fraction: expected a number in (0, 1), got {out['fraction']!r}")
    if out["metric"] not in METRICS:
        raise ValueError(f"{where}.metric: {out['metric']!r} is not one of {', '.join(METRICS)}")
    if out["folds"] is not None and (not isinstance(out["folds"], int) or out["folds"] < 1):
        raise ValueError(f"{where}.folds: a positive integer or null, got {out['folds']!r}")
    if out["baseline"] not in ("pca", None):
        raise ValueError(f"{where}.baseline: 'pca' or null, got {out['baseline']!r}")
    search = out["search"]
    if search is not None and (not isinstance(search, dict) or not all(
            isinstance(v, list) and v for v in search.values())):
        raise ValueError(f"{where}.search: expected {{setting: [values, ...]}}, got {search!r}")
    return out
