"""Simulate a BIDS dataset of a visual image-reconstruction fMRI study, with ground truth.

- :mod:`~fmrirecon.simulate.stimuli`: procedural stimulus images (shapes, letters,
  natural-image crops) or a deterministic sample of a folder of real images;
- :mod:`~fmrirecon.simulate.encoding`: the brain and the pRF/CSS voxel encoding model;
- :mod:`~fmrirecon.simulate.bold`: the BOLD time series (HRF, drift, AR(1) noise,
  head motion);
- :mod:`~fmrirecon.simulate.higher`: optionally, a higher visual area whose voxels
  respond to a deep layer of a separately trained network;
- :mod:`~fmrirecon.simulate.study`: the study design and the BIDS files;
- :mod:`~fmrirecon.simulate.truth`: the ground truth HDF5 (its layout is documented
  there).

Typical use (``cfg`` is the config's ``simulate`` section; missing keys take
:data:`DEFAULTS`)::

    plan = study_plan(cfg)
    write_stimuli(cfg, bids_dir)
    write_dataset_files(cfg, bids_dir)
    for subject in plan["subjects"]:
        simulate_subject(cfg, bids_dir, subject, truth_dir / f"sub-{subject}_truth.h5")
"""

from .study import (
    DEFAULTS,
    IMAGERY_GAIN,
    STIMULUS_KEYS,
    bids_run_name,
    simulate_subject,
    stimulus_settings,
    study_plan,
    write_dataset_files,
    write_stimuli,
    write_unpaired,
)
from .truth import read_truth_trials

__all__ = [
    "DEFAULTS",
    "IMAGERY_GAIN",
    "STIMULUS_KEYS",
    "bids_run_name",
    "read_truth_trials",
    "simulate_subject",
    "stimulus_settings",
    "study_plan",
    "write_dataset_files",
    "write_stimuli",
    "write_unpaired",
]
