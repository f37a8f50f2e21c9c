"""fmrirecon: reconstruct seen and imagined images from fMRI."""

__version__ = "0.1.0"
