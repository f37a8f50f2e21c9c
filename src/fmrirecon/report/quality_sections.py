"""The data-quality section of each subject (from :mod:`fmrirecon.quality`'s summary and
figures) and its warnings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from .formatting import _fmt, _png_base64
from .records import _check_record


def _quality_sections(quality: list[Mapping]) -> tuple[list[dict], list[str]]:
    sections, warnings = [], []
    for record in sorted(quality, key=lambda r: r["subject"]):
        _check_record(record, ("subject", "summary", "figures"), "quality")
        summary = json.loads(Path(record["summary"]).read_text())
        counts = summary["counts"]
        splits = [{"split": name, **c} for name, c in counts["splits"].items()]
        rel, ceil = summary["reliability"], summary["noise_ceiling"]
        facts = [
            ("voxels (in the mask / kept for decoding)", f"{counts['voxels']} / {counts['voxels_selected']}"),
            (f"median reliability (all / kept; from the {rel.get('split') or '?'} split)",
             f"{_fmt(rel['all']['median'])} / {_fmt(rel['selected']['median'])}"),
            (f"median noise ceiling, % (all / kept; {ceil.get('n_average') or '?'} repeats averaged)",
             f"{_fmt(ceil['all']['median'], 1)} / {_fmt(ceil['selected']['median'], 1)}"),
        ]
        if "r2_trials" in summary:
            r2 = summary["r2_trials"]
            noise = f"; pure noise: about {_fmt(r2['noise_level'])}" if r2.get("noise_level") is not None else ""
            facts.append((f"median single-trial partial R2, {r2['run']} (all / kept; whole model R2: "
                          f"{_fmt(r2['r2_full_median'])}{noise})",
                          f"{_fmt(r2['all']['median'])} / {_fmt(r2['selected']['median'])}"))
        motion = [m for m in summary.get("motion", []) if m.get("fd_mean") is not None]
        if motion:
            facts.append(("mean framewise displacement, mm (runs: min-max)",
                          f"{_fmt(min(m['fd_mean'] for m in motion))}-{_fmt(max(m['fd_mean'] for m in motion))}"))
        figures = []
        for key, caption in summary["figures"].items():
            path = Path(record["figures"][key])
            if not path.is_file():
                raise FileNotFoundError(f"quality figure {path} not found")
            figures.append({"png": _png_base64(path.read_bytes()), "caption": caption, "key": key})
        subject = f"sub-{record['subject']}"
        warnings += [f"{subject}: {w}" for w in summary.get("warnings", [])]
        split_text = ", ".join(f"{sp['split']} {sp['trials']} trials of {sp['images']} images"
                               + (f" (x{sp['repeats_median']:g})" if sp["repeats_max"] > 1 else "")
                               for sp in splits)
        sections.append({"subject": subject, "splits": splits, "facts": facts, "figures": figures,
                         "warnings": summary.get("warnings", []),
                         "counts_text": f"{subject}: {split_text}; {counts['voxels_selected']} of "
                                        f"{counts['voxels']} voxels kept"})
    return sections, warnings
