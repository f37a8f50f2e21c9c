"""Shared test fixtures and the location of the shared real data."""

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: Packages whose versions move our numbers: printed at the top of every test run, so
#: a CI log says what it tested (compare with constraints.txt).
KEY_PACKAGES = ("snakemake", "numpy", "scipy", "scikit-learn", "pandas", "nilearn", "nibabel",
                "pybids", "himalaya", "torch", "torchvision", "scikit-image", "h5py")


def pytest_report_header(config):
    """Resolved versions of the key packages and the BLAS kernel in use."""
    from importlib.metadata import PackageNotFoundError, version

    from threadpoolctl import threadpool_info

    def installed(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')}, "
            f"{i.get('num_threads')} threads)" for i in threadpool_info() if i.get("user_api") == "blas"]
    return ["versions: " + ", ".join(f"{name} {installed(name)}" for name in KEY_PACKAGES),
            "blas: " + ("; ".join(sorted(set(blas))) or "not loaded yet")]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread: small tensors on a shared 2-core machine only lose from more."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def shared_data(relative: str) -> Path:
    """A path under ../shared/data, skipping the test with the reason when absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} not found: the shared real data must sit beside the repository")
    return path


def smooth_images(n, size=16, seed=0):
    """Random smooth grayscale images (n, size, size, 1) in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    raw = gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, 2, 2))
    raw = (raw - raw.min()) / (raw.max() - raw.min())
    return raw[..., None].astype(np.float32)


def linear_voxels(images, n_voxels=300, noise=0.5, seed=0):
    """Voxel responses = random Gaussian receptive fields over the pixels + noise."""
    rng = np.random.default_rng(seed + 1)
    n, h, w, _ = images.shape
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0, h, n_voxels), rng.uniform(0, w, n_voxels)
    sd = rng.uniform(1, 3, n_voxels)
    rf = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2)
                / (2 * sd[:, None, None] ** 2)).reshape(n_voxels, -1)
    clean = images.reshape(n, -1) @ rf.T
    clean = (clean - clean.mean(0)) / clean.std(0)
    return (clean + noise * rng.standard_normal(clean.shape)).astype(np.float32)
