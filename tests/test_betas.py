import numpy as np
import pandas as pd
import pytest

from fmrirecon.betas import TRIAL_COLUMNS, Betas, read_betas, write_betas


def _betas(n=6, v=4):
    trials = pd.DataFrame({
        "trial": range(n), "task": ["test"] * n, "run": [1] * n, "onset": np.arange(n) * 4.0,
        "duration": [3.0] * n, "stim_file": ["a.png", "b.png", "a.png", "c.png", "b.png", "a.png"][:n],
        "split": ["test"] * n, "repetition": [1, 1, 2, 1, 2, 3][:n],
    })[TRIAL_COLUMNS]
    data = np.arange(n * v, dtype=np.float32).reshape(n, v)
    return Betas(data, trials, np.indices((2, 2, 1)).reshape(3, -1).T, np.eye(4), (2, 2, 1),
                 reliability=np.linspace(0, 1, v), attrs={"glm_method": "lsa"})


def test_round_trip(tmp_path):
    betas = _betas()
    write_betas(tmp_path / "b.h5", betas, tmp_path / "t.tsv")
    back = read_betas(tmp_path / "b.h5", tmp_path / "t.tsv")
    np.testing.assert_array_equal(back.betas, betas.betas)
    np.testing.assert_array_equal(back.voxel_ijk, betas.voxel_ijk)
    np.testing.assert_allclose(back.reliability, betas.reliability, rtol=1e-6)
    assert back.noise_ceiling is None
    assert back.shape == (2, 2, 1) and back.attrs["glm_method"] == "lsa"
    pd.testing.assert_frame_equal(back.trials, betas.trials, check_dtype=False)


def test_average_repeats_averages_rows_of_one_stimulus():
    betas = _betas()
    averaged, stims = betas.average_repeats()
    assert list(stims) == ["a.png", "b.png", "c.png"]
    np.testing.assert_allclose(averaged[0], betas.betas[[0, 2, 5]].mean(0))
    np.testing.assert_allclose(averaged[2], betas.betas[3])


def test_rows_must_match_trials():
    betas = _betas()
    with pytest.raises(ValueError, match="beta rows"):
        Betas(betas.betas[:3], betas.trials, betas.voxel_ijk, betas.affine, betas.shape)
