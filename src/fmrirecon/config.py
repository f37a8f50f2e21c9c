"""Configuration: validation against the JSON schema with one clear message."""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config key or value the schema rejects."""


def unknown_key_message(where: str, key: str, known) -> str:
    """One line naming an unknown ``key`` of ``where`` and its closest known key.

    For the sections whose keys are not in the schema (``simulate``, each method's
    settings); imports nothing beyond the standard library and PyYAML, so the rules'
    environments can call it.
    """
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: unknown key {key!r}{hint}; known: {', '.join(sorted(known))}"


def check_config(config: dict, schema_path: str | Path) -> None:
    """Raise :class:`ConfigError` naming the first offending key if ``config`` is invalid.

    ``snakemake.utils.validate`` fills defaults but reports an error with the whole
    schema attached; this states the key path and the problem in one line instead.
    """
    import jsonschema  # Snakemake's dependency: the workflow's process has it, rule envs need not

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        where = "config" + "".join(f"[{p!r}]" for p in error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # name the unknown key and the known key it is closest to (a typo)
            known = list(error.schema.get("properties", {}))
            extra = [key for key in error.instance if key not in known]
            if extra:
                close = difflib.get_close_matches(str(extra[0]), known, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{where}: unknown key {extra[0]!r}{hint}")
        raise ConfigError(f"{where}: {error.message}")


def fill_defaults(config: dict, schema_path: str | Path) -> dict:
    """Set, in place, every default the schema declares for a key ``config`` leaves out.

    ``snakemake.utils.validate`` does this too, but skips it inside cluster jobs
    (``--mode remote``) on the assumption that the jobs see the main process's config;
    they see only the config files named on the command line, so a job would miss every
    default. Call :func:`check_config` first: defaults are filled only where the config
    has the schema's shape.
    """
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if validator.is_type(instance, "object"):
            for key, spec in properties.items():
                if "default" in spec:
                    instance.setdefault(key, spec["default"])
        yield from check_properties(validator, properties, instance, subschema)

    filling = jsonschema.validators.extend(base, {"properties": set_defaults})
    for _ in filling(schema).iter_errors(config):
        pass  # check_config reported errors; here the walk only fills defaults
    return config
