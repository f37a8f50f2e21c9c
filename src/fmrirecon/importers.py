"""Entry point ``betas``: import single-trial responses that others already estimated.

Many public recordings ship as ready-made response matrices (Kamitani-lab and
Miyawaki-style MATLAB files, NSD-style HDF5, numpy archives) rather than raw BOLD.
:func:`import_betas` reads such a file, described by a small spec (the config section
``betas``), and writes what the ``glm`` stage would have written (docs/formats.md,
section 3) plus the stimuli as PNG files, so every later stage runs unchanged.

Adapters (:func:`open_data_file`): ``.mat`` v5 and older (scipy.io.loadmat), ``.mat``
v7.3 (HDF5; h5py, with MATLAB's column-major axes reversed back), ``.npz`` and ``.h5`` /
``.hdf5`` (any dataset path, e.g. ``group/name``).

The spec (keys of the config section ``betas``; only the first five are required):

``file``
    The data file (relative paths: to the working directory, i.e. the repo root).
``train_responses``, ``test_responses``
    Dataset names of the response matrices, (n_trials, n_voxels) each.
``train_stimuli``, ``test_stimuli``
    What each trial showed. Either a dataset name holding (a) images, one per
    trial (n, H, W[, C]) or flattened (n, H*W[*C]) with ``image_shape``; (b) file
    names, resolved in ``stimuli_folder``; or (c) integer indices into
    ``stimulus_pool``. Or the path of an image folder whose sorted files are the
    trials, in order.
``stimulus_pool``
    Dataset (images) or folder (sorted files) that integer stimuli index into.
``index_base``
    0 (default) or 1 (MATLAB) for integer stimulus indices.
``stimuli_folder``
    Folder of the file names in (b); default the data file's folder.
``train_labels``, ``test_labels``
    Optional per-trial labels (e.g. condition), written to ``stimuli.tsv`` under
    ``label_name`` (default ``label``) when each image has one label.
``train_runs``, ``test_runs``
    Optional per-trial run (or block) numbers; default 1. Decoders leave whole runs
    out in their cross-validation.
``image_shape``
    ``[H, W]`` or ``[H, W, C]`` of flattened images.
``image_order``
    ``C`` (row-major, numpy) or ``F`` (column-major, MATLAB) for flattened images.
``image_subsample``
    Keep every n-th pixel (for stimuli stored upsampled by pixel repetition).
``stimulus_axis``
    Axis of the trials in stimulus image arrays (0, or -1 for MATLAB H x W x n).
``transpose_responses``
    The response matrices are stored (n_voxels, n_trials).
``voxel_ijk``
    Optional dataset (n_voxels, 3) of 0-based voxel indices, with optional
    ``volume_shape`` ([X, Y, Z]) and ``affine`` (a dataset name, 4x4). Without it the
    voxels sit on a 1-D pseudo-grid (see :func:`import_betas`).
``reliability_split``
    Split the per-voxel reliability comes from (``train``, ``test`` or ``all``).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image

from .betas import TRIAL_COLUMNS, Betas, write_betas
from .reliability import add_reliability

__all__ = ["DataFile", "open_data_file", "import_betas", "check_betas", "SPEC_DEFAULTS", "IMAGE_SUFFIXES"]

log = logging.getLogger(__name__)

#: Spec keys and their defaults (None: not given). Keys outside this dict are errors.
SPEC_DEFAULTS = {
    "file": None,
    "subject": "01",
    "format": "auto",
    "train_responses": None,
    "test_responses": None,
    "train_stimuli": None,
    "test_stimuli": None,
    "stimulus_pool": None,
    "index_base": 0,
    "stimuli_folder": None,
    "train_labels": None,
    "test_labels": None,
    "label_name": "label",
    "train_runs": None,
    "test_runs": None,
    "image_shape": None,
    "image_order": "C",
    "image_subsample": 1,
    "stimulus_axis": 0,
    "transpose_responses": False,
    "voxel_ijk": None,
    "volume_shape": None,
    "affine": None,
    "reliability_split": "train",
}
REQUIRED = ("file", "train_responses", "test_responses", "train_stimuli", "test_stimuli")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
FORMATS = ("auto", "mat", "npz", "h5")


# ---------------------------------------------------------------- adapters


class DataFile:
    """Named arrays of one data file, read lazily where the format allows.

    Use :func:`open_data_file` to get one. ``names`` lists the datasets; ``read(name)``
    returns one as a numpy array (MATLAB arrays in MATLAB's axis order, whatever the
    file version), or raises one ValueError naming the file and the missing key with
    the keys that exist.
    """

    def __init__(self, path: Path, kind: str, names: list[str], reader):
        self.path, self.kind, self.names, self._reader = path, kind, names, reader

    def __contains__(self, name) -> bool:
        return name in self.names

    def read(self, name: str, what: str = "dataset") -> np.ndarray:
        """The array called ``name``; ``what`` (the spec key) goes into the error."""
        if name not in self.names:
            shown = ", ".join(self.names[:40]) + (" ..." if len(self.names) > 40 else "")
            raise ValueError(
                f"{self.path}: no dataset {name!r} (betas.{what}); the file has: {shown or 'nothing'}"
            )
        return self._reader(name)


def _mat_v5(path: Path) -> DataFile:
    from scipy.io import loadmat, whosmat

    # the names from the variables' headers; the arrays on first read (the pre-flight,
    # run before every workflow start, needs only the names)
    try:
        names = sorted(name for name, _, _ in whosmat(path) if not name.startswith("__"))
    except Exception as err:  # scipy raises several types for broken files
        raise ValueError(f"{path}: cannot read MATLAB file ({err})") from err
    loaded = {}

    def read(name):
        if not loaded:
            try:
                loaded.update(loadmat(path, squeeze_me=False))
            except Exception as err:
                raise ValueError(f"{path}: cannot read MATLAB file ({err})") from err
        return np.asarray(loaded[name])

    return DataFile(path, "mat", names, read)


def _h5_names(f: h5py.File, skip_refs: bool) -> list[str]:
    names = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and not (skip_refs and name.startswith("#")):
            names.append(name)

    f.visititems(visit)
    return sorted(names)


def _mat73_value(f: h5py.File, dset: h5py.Dataset):
    """A MATLAB v7.3 dataset in MATLAB's axis order (HDF5 stores it transposed)."""
    cls = dset.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    value = dset[()]
    if cls == "char":  # uint16 code units; one string per row in MATLAB
        chars = np.asarray(value).T
        return np.array(["".join(map(chr, row)).rstrip("\x00") for row in np.atleast_2d(chars)])
    if value.dtype == h5py.ref_dtype:  # a cell array: follow each reference
        cells = [_mat73_value(f, f[ref]) for ref in np.asarray(value).T.ravel()]
        if all(np.asarray(c).dtype.kind in "US" and np.asarray(c).size == 1 for c in cells):
            return np.array([str(np.asarray(c).ravel()[0]) for c in cells])
        out = np.empty(len(cells), dtype=object)
        out[:] = cells
        return out
    return np.asarray(value).T


def _hdf5(path: Path, matlab: bool) -> DataFile:
    def read(name):
        with h5py.File(path, "r") as f:
            if matlab:
                return _mat73_value(f, f[name])
            value = f[name][()]
            if value.dtype.kind == "O" or value.dtype.kind == "S":
                value = np.array([v.decode() if isinstance(v, bytes) else str(v)
                                  for v in np.asarray(value).ravel()]).reshape(value.shape)
            return np.asarray(value)

    try:
        with h5py.File(path, "r") as f:
            names = _h5_names(f, skip_refs=matlab)
    except OSError as err:
        raise ValueError(f"{path}: cannot read HDF5 file ({err})") from err
    return DataFile(path, "mat" if matlab else "h5", names, read)


def _npz(path: Path) -> DataFile:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:
        raise ValueError(f"{path}: cannot read numpy archive ({err})") from err
    return DataFile(path, "npz", sorted(data.files), lambda name: np.asarray(data[name]))


def open_data_file(path: str | Path, format: str = "auto") -> DataFile:
    """Open a ``.mat`` (v5 or v7.3), ``.npz`` or HDF5 file of named arrays.

    Parameters
    ----------
    path : str or Path
    format : {"auto", "mat", "npz", "h5"}, default="auto"
        ``auto`` goes by the extension (``.mat``, ``.npz``, ``.h5``/``.hdf5``). MATLAB
        v7.3 files are HDF5 and are detected by their signature.

    Returns
    -------
    DataFile

    Raises
    ------
    ValueError
        Missing or unreadable file, unknown format (naming the file).
    """
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"{path}: betas.format must be one of {FORMATS}, got {format!r}")
    if not path.is_file():
        raise ValueError(f"{path}: betas file not found")
    if format == "auto":
        suffix = path.suffix.lower()
        format = {".mat": "mat", ".npz": "npz", ".h5": "h5", ".hdf5": "h5", ".hdf": "h5"}.get(suffix)
        if format is None:
            raise ValueError(f"{path}: unknown extension {suffix!r}; set betas.format (mat, npz or h5)")
    if format == "npz":
        return _npz(path)
    if format == "mat":
        return _hdf5(path, matlab=True) if h5py.is_hdf5(path) else _mat_v5(path)
    return _hdf5(path, matlab=False)


# ---------------------------------------------------------------- stimuli


def _resolve(path, base: Path | None = None) -> Path:
    path = Path(path)
    return path if path.is_absolute() or base is None else base / path


def _folder_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _read_image_file(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert("RGB") if img.mode not in ("L", "1", "I", "F") else img.convert("L")
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from err
    return arr[..., None] if arr.ndim == 2 else arr


def _strings(arr: np.ndarray) -> list[str] | None:
    """The entries of ``arr`` as strings if it holds text (also MATLAB cellstr)."""
    arr = np.asarray(arr)
    if arr.dtype.kind in "US":
        return [str(s) for s in arr.ravel()]
    if arr.dtype.kind == "O":
        out = []
        for v in arr.ravel():
            v = np.asarray(v)
            if v.dtype.kind not in "US" or v.size != 1:
                return None
            out.append(str(v.ravel()[0]))
        return out
    return None


def _image_array(arr: np.ndarray, spec: dict, where: str) -> np.ndarray:
    """Numeric stimulus arrays -> (n, H, W, C) float in [0, 1]."""
    arr = np.moveaxis(np.asarray(arr), int(spec["stimulus_axis"]), 0)
    if arr.ndim == 2:
        shape = spec["image_shape"]
        if not shape:
            raise ValueError(f"{where}: images are flattened ({arr.shape[1]} values per trial); "
                             "set betas.image_shape")
        shape = tuple(int(s) for s in shape)
        if int(np.prod(shape)) != arr.shape[1]:
            raise ValueError(f"{where}: {arr.shape[1]} values per image do not fit "
                             f"betas.image_shape {list(shape)}")
        order = str(spec["image_order"]).upper()
        if order not in ("C", "F"):
            raise ValueError(f"{where}: betas.image_order must be C or F, got {order!r}")
        arr = np.stack([row.reshape(shape, order=order) for row in arr]) if len(arr) else \
            arr.reshape((0, *shape))
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"{where}: stimulus images must be (n, H, W[, 1 or 3]), got {arr.shape}")
    step = int(spec["image_subsample"])
    if step < 1:
        raise ValueError(f"{where}: betas.image_subsample must be >= 1, got {step}")
    arr = arr[:, ::step, ::step].astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: stimulus images hold NaN or inf")
    low, high = arr.min(initial=0.0), arr.max(initial=0.0)
    if low < 0 or high > 255:
        raise ValueError(f"{where}: stimulus values span [{low:g}, {high:g}]; expected [0, 1] or [0, 255]")
    # 0-255 images (uint8 or float) are scaled; [0, 1] ones kept as they are
    return arr / 255.0 if high > 1 else arr


def _stimuli(data: DataFile, split: str, spec: dict, cache: dict) -> np.ndarray:
    """The images of the ``split``'s trials, (n, H, W, C) in [0, 1]."""
    key = f"{split}_stimuli"
    value = spec[key]
    if value not in data:
        folder = Path(value)
        if folder.is_dir():
            return np.stack([_read_image_file(p) for p in _folder_files(folder)])
        data.read(value, key)  # raises, naming the file, the key and the keys that exist
    arr = data.read(value, key)
    where = f"{data.path}: {value!r} (betas.{key})"
    names = _strings(arr)
    if names is not None:
        base = _resolve(spec["stimuli_folder"]) if spec["stimuli_folder"] else data.path.parent
        paths = [_resolve(n, base) for n in names]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"{where}: stimulus file(s) not found: {missing[:3]}")
        return np.stack([_read_image_file(p) for p in paths])
    if arr.dtype.kind in "iu" and (arr.ndim == 1 or (arr.ndim == 2 and 1 in arr.shape)):
        if not spec["stimulus_pool"]:
            raise ValueError(f"{where}: integer stimuli are indices; set betas.stimulus_pool")
        if "pool" not in cache:
            pool = spec["stimulus_pool"]
            if pool not in data and Path(pool).is_dir():
                cache["pool"] = np.stack([_read_image_file(p) for p in _folder_files(Path(pool))])
            else:
                cache["pool"] = _image_array(data.read(pool, "stimulus_pool"), spec,
                                             f"{data.path}: {pool!r} (betas.stimulus_pool)")
        index = arr.ravel().astype(np.int64) - int(spec["index_base"])
        pool = cache["pool"]
        if index.min(initial=0) < 0 or index.max(initial=0) >= len(pool):
            raise ValueError(f"{where}: indices outside the {len(pool)} pool images "
                             f"(index_base {spec['index_base']})")
        return pool[index]
    return _image_array(arr, spec, where)


def _per_trial(data: DataFile, key: str, spec: dict, n: int):
    """Optional per-trial vector (labels, runs) or None."""
    if not spec[key]:
        return None
    arr = data.read(spec[key], key)
    values = _strings(arr)
    values = np.asarray(values if values is not None else np.asarray(arr).ravel())
    if len(values) != n:
        raise ValueError(f"{data.path}: {spec[key]!r} (betas.{key}) has {len(values)} "
                         f"entries for {n} trials")
    return values


# ---------------------------------------------------------------- import


def _check_spec(spec: dict) -> dict:
    unknown = sorted(set(spec) - set(SPEC_DEFAULTS))
    name = spec.get("file", "betas")
    if unknown:
        raise ValueError(f"{name}: unknown betas key(s) {unknown}; known: {sorted(SPEC_DEFAULTS)}")
    spec = {**SPEC_DEFAULTS, **{k: v for k, v in spec.items() if v is not None}}
    missing = [k for k in REQUIRED if not spec[k]]
    if missing:
        raise ValueError(f"{name}: betas section lacks {missing}")
    if spec["reliability_split"] not in ("train", "test", "all"):
        raise ValueError(f"{name}: betas.reliability_split must be train, test or all")
    return spec


def check_betas(spec: dict) -> None:
    """Pre-flight of the ``betas:`` entry point, before any job: the spec's keys, the
    data file (exists, readable, of a known format) and the names it must hold, and the
    stimulus folder. Raises one ValueError naming the file or key.

    Reading the arrays themselves, and the checks on their shapes and values, stay in
    :func:`import_betas` (the job).
    """
    spec = _check_spec(spec)
    data = open_data_file(spec["file"], spec["format"])
    for key in ("train_responses", "test_responses", "train_labels", "test_labels", "train_runs",
                "test_runs", "voxel_ijk", "affine", "train_stimuli", "test_stimuli", "stimulus_pool"):
        value = spec[key]
        folder_allowed = key.endswith(("stimuli", "pool"))  # a dataset name or an image folder
        if isinstance(value, str) and value not in data and not (folder_allowed and Path(value).is_dir()):
            data.read(value, key)  # raises, listing the names the file has
    if spec["stimuli_folder"] is not None and not Path(spec["stimuli_folder"]).is_dir():
        raise ValueError(f"{spec['stimuli_folder']}: betas.stimuli_folder not found")


def _responses(data: DataFile, key: str, spec: dict) -> np.ndarray:
    arr = np.asarray(data.read(spec[key], key))
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise ValueError(f"{data.path}: {spec[key]!r} (betas.{key}) must be a 2-D numeric "
                         f"matrix, got shape {arr.shape} ({arr.dtype})")
    arr = arr.T if spec["transpose_responses"] else arr
    if not np.isfinite(arr).all():
        raise ValueError(f"{data.path}: {spec[key]!r} (betas.{key}) holds NaN or inf")
    return arr.astype(np.float32)


def _grid(data: DataFile, spec: dict, n_voxels: int):
    """voxel_ijk, affine, shape and the grid note."""
    if not spec["voxel_ijk"]:
        # no volume geometry: voxels in a row, so the NIfTI-based stages still work
        return (np.stack([np.arange(n_voxels), np.zeros(n_voxels, int), np.zeros(n_voxels, int)],
                         axis=1), np.eye(4), (n_voxels, 1, 1), "pseudo")
    ijk = np.asarray(data.read(spec["voxel_ijk"], "voxel_ijk"))
    if ijk.shape == (3, n_voxels) and n_voxels != 3:
        ijk = ijk.T
    if ijk.shape != (n_voxels, 3) or ijk.dtype.kind not in "iuf" or (ijk < 0).any():
        raise ValueError(f"{data.path}: {spec['voxel_ijk']!r} (betas.voxel_ijk) must hold "
                         f"{n_voxels} non-negative 0-based (i, j, k) rows, got shape {ijk.shape}")
    ijk = ijk.astype(np.int64)
    shape = tuple(int(s) for s in (spec["volume_shape"] or ijk.max(axis=0) + 1))
    if len(shape) != 3 or (ijk >= np.array(shape)).any():
        raise ValueError(f"{data.path}: voxel_ijk outside betas.volume_shape {list(shape)}")
    if len({tuple(r) for r in ijk}) != n_voxels:
        raise ValueError(f"{data.path}: {spec['voxel_ijk']!r} (betas.voxel_ijk) repeats voxels")
    affine = np.eye(4)
    if spec["affine"]:
        affine = np.asarray(data.read(spec["affine"], "affine"), dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"{data.path}: {spec['affine']!r} (betas.affine) must be 4x4")
    return ijk, affine, shape, "volume"


def _name_stimuli(images: dict[str, np.ndarray]) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """One stim_file per distinct image (as stored in the PNG), named by first appearance."""
    by_hash, files, pngs = {}, {}, {}
    for split, arr in images.items():
        names, count = [], 0
        for img in arr:
            png = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
            key = hashlib.sha1(png.tobytes() + str(png.shape).encode()).hexdigest()
            if key not in by_hash:
                count += 1
                by_hash[key] = f"{split}_{count:04d}.png"
                pngs[by_hash[key]] = png
            names.append(by_hash[key])
        files[split] = names
    return files, pngs


def import_betas(spec: dict, out_betas, out_trials, stimuli_dir) -> None:
    """Import precomputed single-trial responses as the pipeline's betas.

    Parameters
    ----------
    spec : dict
        The config section ``betas`` (keys and defaults: :data:`SPEC_DEFAULTS`, meaning
        in the module docstring). Relative paths are relative to the working directory.
    out_betas, out_trials : str or Path
        Betas HDF5 and trial table, as :func:`fmrirecon.betas.write_betas` writes them.
    stimuli_dir : str or Path
        Folder for the stimuli (created): one PNG per distinct image, named
        ``<split>_<nnnn>.png`` by first appearance (an image shown again, in either
        split, keeps its first name, so repeats are recognised), and ``stimuli.tsv``
        (``stim_file``, ``split`` of first appearance, the label column when given).

    Notes
    -----
    Trial table: ``task`` and ``split`` are ``train``/``test``, ``run`` the given runs
    or 1, ``onset``/``duration`` n/a, ``repetition`` the running count of each image
    within its split. Reliability and noise ceiling come from
    :func:`fmrirecon.reliability.add_reliability` (NaN without repeats).

    Without ``voxel_ijk`` the voxels get a 1-D pseudo-grid: shape (n_voxels, 1, 1),
    ``voxel_ijk[v] = (v, 0, 0)``, identity affine, attribute ``grid = "pseudo"``.
    Voxel selection by ``all`` or ``reliability`` works on it; ``mask`` and ``atlas``
    images would have to be drawn on that grid too.

    Raises
    ------
    ValueError
        Naming the file: a missing dataset (with the ones that exist), mismatched
        trial or voxel counts, malformed images or unknown spec keys.
    """
    spec = _check_spec(dict(spec))
    data = open_data_file(_resolve(spec["file"]), spec["format"])
    responses = {s: _responses(data, f"{s}_responses", spec) for s in ("train", "test")}
    if responses["train"].shape[1] != responses["test"].shape[1]:
        raise ValueError(f"{data.path}: train responses have {responses['train'].shape[1]} voxels, "
                         f"test responses {responses['test'].shape[1]}")
    cache: dict = {}
    images = {}
    for split in ("train", "test"):
        images[split] = _stimuli(data, split, spec, cache)
        if len(images[split]) != len(responses[split]):
            raise ValueError(f"{data.path}: {len(images[split])} {split} stimuli "
                             f"({spec[f'{split}_stimuli']!r}) for {len(responses[split])} "
                             f"{split} response rows ({spec[f'{split}_responses']!r})")
    if images["train"].shape[1:] != images["test"].shape[1:]:
        raise ValueError(f"{data.path}: train images {images['train'].shape[1:]} and test images "
                         f"{images['test'].shape[1:]} differ in shape")
    stim_files, pngs = _name_stimuli(images)

    tables = []
    for split in ("train", "test"):
        n = len(responses[split])
        runs = _per_trial(data, f"{split}_runs", spec, n)
        tables.append(pd.DataFrame({
            "task": split, "run": 1 if runs is None else runs.astype(np.int64),
            "onset": np.nan, "duration": np.nan, "stim_file": stim_files[split], "split": split,
        }))
    trials = pd.concat(tables, ignore_index=True)
    trials["trial"] = np.arange(len(trials))
    trials["repetition"] = trials.groupby(["split", "stim_file"], sort=False).cumcount() + 1

    n_voxels = responses["train"].shape[1]
    ijk, affine, shape, grid = _grid(data, spec, n_voxels)
    shared = sorted(set(stim_files["test"]) & set(stim_files["train"]))
    if shared:
        log.warning("%s: %d of %d distinct test images were also shown in training; "
                    "reconstructions of them can be recalled rather than generalised",
                    data.path, len(shared), len(set(stim_files["test"])))
    attrs = {
        "glm_method": "imported", "source_file": str(data.path), "grid": grid,
        "grid_note": ("no volume geometry in the source: voxels on a 1-D pseudo-grid "
                      "(shape (n_voxels, 1, 1), identity affine)") if grid == "pseudo"
        else "voxel_ijk from the source file",
        "test_images_in_train": len(shared),
    }
    betas = Betas(np.concatenate([responses["train"], responses["test"]]),
                  trials[TRIAL_COLUMNS], ijk.astype(np.int32), affine, shape, attrs=attrs)
    betas = add_reliability(betas, split=spec["reliability_split"])

    stimuli_dir = Path(stimuli_dir)
    stimuli_dir.mkdir(parents=True, exist_ok=True)
    for name, png in pngs.items():
        Image.fromarray(png[..., 0] if png.shape[-1] == 1 else png).save(stimuli_dir / name)
    table = pd.DataFrame({"stim_file": list(pngs), "split": [n.split("_")[0] for n in pngs]})
    labels = {s: _per_trial(data, f"{s}_labels", spec, len(responses[s])) for s in ("train", "test")}
    if any(v is not None for v in labels.values()):
        per_trial = pd.DataFrame({
            "stim_file": stim_files["train"] + stim_files["test"],
            "label": np.concatenate([labels[s] if labels[s] is not None
                                     else np.full(len(responses[s]), None) for s in ("train", "test")]),
        }).dropna()
        consistent = per_trial.groupby("stim_file")["label"].nunique() == 1
        if not consistent.all():
            log.warning("%s: %d image(s) carry several labels; their label is n/a",
                        data.path, (~consistent).sum())
        first = per_trial.groupby("stim_file")["label"].first().where(consistent)
        table[spec["label_name"]] = table["stim_file"].map(first)
    table.to_csv(stimuli_dir / "stimuli.tsv", sep="\t", index=False, na_rep="n/a")
    for path in (out_betas, out_trials):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_betas(out_betas, betas, out_trials)
    log.info("imported %d train + %d test trials x %d voxels from %s (%d distinct images)",
             len(responses["train"]), len(responses["test"]), n_voxels, data.path, len(pngs))
