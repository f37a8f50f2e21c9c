"""The gallery: the shown images above each method's reconstructions, per subject and split."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from fmrirecon.evaluation import read_metrics

from .formatting import _png_base64
from .records import SPLITS


def _tile(image: np.ndarray, side: int) -> str:
    img = np.clip(np.asarray(image, dtype=np.float64), 0, 1)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    pil = Image.fromarray((img * 255).round().astype(np.uint8))
    if pil.width < side:  # small images blown up without smoothing: their pixels stay visible
        pil = pil.resize((side, side), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", optimize=True)
    return _png_base64(buffer.getvalue())


def _contrast_note(method: str, recon: np.ndarray, true: np.ndarray) -> dict | None:
    # reconstructions much flatter than the images look "grey": say why, with numbers
    sd_recon = float(np.mean([r.std() for r in recon]))
    sd_true = float(np.mean([t.std() for t in true]))
    if sd_true <= 0 or sd_recon / sd_true >= 0.5:
        return None
    return {"method": method, "sd_recon": sd_recon, "sd_true": sd_true, "ratio": sd_recon / sd_true,
            "gain": sd_true / max(sd_recon, 1e-6)}


def gallery(evaluations: list[Mapping], columns: int = 10, all_max: int = 60, tile_px: int = 64) -> list[dict]:
    """The gallery: per subject and split, rows = the shown images and each method.

    Every grid has the same test images in the same order (sorted by ``stim_file``).
    Up to ``all_max`` images all are shown, in blocks of ``columns``; beyond, the best,
    median and worst ``columns`` images by PixCorr averaged over the methods (the same
    images for every method), with every image in a collapsed part. Each tile carries
    its PixCorr (beside it) and its SSIM and 2-way identification (on hover).
    Methods whose reconstructions have less than half the images' pixel contrast get a
    second, contrast-stretched row, labelled as a display aid.

    Parameters
    ----------
    evaluations : list of mapping
        Evaluation records; those with a ``recon`` (``_recon.npz``) are shown, their
        ``metrics`` (per-image TSV, optional) give the tiles' scores.
    columns : int
        Images per block.
    all_max : int
        Most images shown in full; beyond, best, median and worst blocks.
    tile_px : int
        Smallest tile side (pixels); smaller images are enlarged without smoothing.

    Returns
    -------
    list of dict
        Per subject and split (test first): ``subject``, ``split``, ``n``, ``blocks``,
        ``hidden`` (the collapsed blocks), ``notes`` (low-contrast methods), ``tile_px``.
    """
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for record in evaluations:
        if record.get("recon"):
            groups.setdefault((record["subject"], record["split"]), []).append(record)
    out = []
    for (subject, split), records in sorted(groups.items(), key=lambda kv: (
            SPLITS.index(kv[0][1]) if kv[0][1] in SPLITS else 9, kv[0][0])):
        loaded = _load(subject, split, records)
        names, true = loaded[0][3], loaded[0][2]
        side = max(tile_px, true.shape[1])
        pix = np.array([s.loc[names, "pixcorr"].to_numpy() if s is not None else np.zeros(len(names))
                        for *_, s in loaded]).mean(axis=0)
        notes = [n for n in (_contrast_note(m, r, t) for m, r, t, _, _ in loaded) if n]
        grid = {"loaded": loaded, "names": names, "true": true, "side": side, "notes": notes}
        blocks, hidden = _blocks(grid, pix, columns, all_max)
        out.append({"subject": f"sub-{subject}", "split": split, "n": len(names), "blocks": blocks,
                    "hidden": hidden, "notes": notes, "tile_px": side})
    return out


def _load(subject: str, split: str, records: list[Mapping]) -> list[tuple]:
    # (method, reconstructions, true images, stim files, per-image scores or None) per method,
    # by method and then in stim_file order, so that every row shows the same images
    loaded = []
    for record in sorted(records, key=lambda r: r["method"]):
        path = Path(record["recon"])
        if not path.is_file():
            raise FileNotFoundError(f"reconstructions {path} not found")
        data = np.load(path)
        order = np.argsort(data["stim_file"].astype(str), kind="stable")
        scores = (read_metrics(record["metrics"]).set_index("stim_file")
                  if record.get("metrics") else None)
        loaded.append((record["method"], data["images"][order], data["true"][order],
                       data["stim_file"].astype(str)[order], scores))
    names = loaded[0][3]
    for method, _, _, stims, _ in loaded[1:]:
        if not np.array_equal(stims, names):
            raise ValueError(f"sub-{subject} {split}: {method} reconstructs other test images than "
                             f"{loaded[0][0]}")
    return loaded


def _blocks(grid: dict, pix: np.ndarray, columns: int, all_max: int) -> tuple[list[dict], list[dict]]:
    # (shown blocks, collapsed blocks): every image, or best/median/worst by PixCorr and the rest hidden
    n = len(grid["names"])
    blocks, hidden = [], []
    chunks = [list(range(i, min(i + columns, n))) for i in range(0, n, columns)]
    if n <= all_max:
        blocks = [_block(grid, c, f"images {c[0] + 1}-{c[-1] + 1} of {n}") for c in chunks]
    else:
        ranked = np.argsort(-pix, kind="stable")
        mid = max(0, n // 2 - columns // 2)
        for title, picked in (("best by PixCorr (mean over methods)", ranked[:columns]),
                              ("median by PixCorr", ranked[mid:mid + columns]),
                              ("worst by PixCorr", ranked[-columns:])):
            blocks.append(_block(grid, sorted(picked.tolist()), title))
        hidden = [_block(grid, c, f"images {c[0] + 1}-{c[-1] + 1} of {n}") for c in chunks]
    return blocks, hidden


def _block(grid: dict, indices: list[int], title: str) -> dict:
    # one grid of tiles: the shown images, then each method (and its contrast-stretched row)
    names, side = grid["names"], grid["side"]
    rows = [{"label": "shown", "kind": "truth",
             "tiles": [{"png": _tile(grid["true"][i], side), "caption": names[i], "title": names[i]}
                       for i in indices]}]
    for method, recon, _, _, scores in grid["loaded"]:
        tiles = []
        for i in indices:
            if scores is not None:
                s = scores.loc[names[i]]
                caption = f"r {s['pixcorr']:.2f}"
                tip = (f"{names[i]} · {method}: PixCorr {s['pixcorr']:.3f}, SSIM {s['ssim']:.3f}, "
                       f"2-way ident. {s['ident2']:.2f}")
            else:
                caption, tip = "", names[i]
            tiles.append({"png": _tile(recon[i], side), "caption": caption, "title": tip})
        rows.append({"label": method, "kind": "method", "tiles": tiles})
        note = next((n for n in grid["notes"] if n["method"] == method), None)
        if note:
            mean = recon.mean(axis=(1, 2, 3), keepdims=True)
            stretched = np.clip(mean + (recon - mean) * note["gain"], 0, 1)
            rows.append({"label": f"{method}, contrast ×{note['gain']:.1f} (display only)",
                         "kind": "stretched",
                         "tiles": [{"png": _tile(stretched[i], side), "caption": "",
                                    "title": f"{names[i]} · {method}, contrast stretched for display"}
                                   for i in indices]})
    return {"title": title, "rows": rows}
