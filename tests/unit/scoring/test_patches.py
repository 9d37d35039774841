"""The patch map's memory: coreset, nearest distances, scale and file, against references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from anomaly.errors import ConfigError, ModelFolderError
from anomaly.scoring.patches import (
    PatchMemory,
    check_patch_settings,
    greedy_coreset,
    patch_scale,
    positions,
)


def _brute_k_centre(points: np.ndarray, n: int) -> list[int]:
    """k-centre greedy written out with full distance matrices (the reference)."""
    d = cdist(points, points)
    chosen = [0]
    for _ in range(n - 1):
        chosen.append(int(d[:, chosen].min(axis=1).argmax()))
    return chosen


def test_the_coreset_is_greedy_k_centre_and_keeps_rare_points():
    rng = np.random.default_rng(0)
    cluster = rng.normal(0, 0.1, (200, 5))
    outliers = np.array([[9.0, 0, 0, 0, 0], [0, -8.0, 0, 0, 0], [0, 0, 7.0, 0, 0]])
    points = np.concatenate([cluster, outliers])
    chosen = greedy_coreset(torch.from_numpy(points), 12, projection=None).tolist()
    assert chosen == _brute_k_centre(points, 12)
    # The three rare points are among the first picks; a random 6% sample would most
    # likely keep none of them.
    assert {200, 201, 202} <= set(chosen[:4])
    assert len(set(chosen)) == 12


def test_the_coreset_after_projection_still_covers_the_set():
    rng = np.random.default_rng(1)
    points = torch.from_numpy(rng.normal(size=(500, 256)).astype(np.float32))
    chosen = greedy_coreset(points, 50, projection=32, seed=3)
    assert len(set(chosen.tolist())) == 50

    # Covering radius (largest distance of a point to its nearest chosen one) within 25%
    # of the unprojected greedy's, and well below a random subset's.
    def radius(idx):
        return cdist(points.numpy(), points.numpy()[idx]).min(axis=1).max()

    full = radius(greedy_coreset(points, 50, projection=None).numpy())
    assert radius(chosen.numpy()) < 1.25 * full
    assert greedy_coreset(points, 600).tolist() == list(range(500))


def test_distances_are_those_of_the_nearest_memory_row():
    rng = np.random.default_rng(2)
    bank = rng.normal(size=(300, 16)).astype(np.float32)
    memory = PatchMemory(bank=bank)
    queries = torch.from_numpy(rng.normal(size=(3, 16, 4, 5)).astype(np.float32))
    got = memory.distances(queries)
    rows = positions(queries).numpy()
    want = cdist(rows.astype(np.float64), bank.astype(np.float64)).min(axis=1)
    assert got.shape == (3, 4, 5)
    np.testing.assert_allclose(got.numpy().ravel(), want, rtol=1e-5)
    # A position equal to a memory row is at distance 0, not a cancellation residue.
    exact = torch.from_numpy(bank[7].reshape(1, 16, 1, 1) + 100.0)
    shifted = PatchMemory(bank=bank + 100.0)
    assert shifted.distances(exact).item() == 0.0
    with pytest.raises(ValueError, match="do not fit a patch memory of 16 features"):
        memory.distances(torch.zeros(1, 8, 2, 2))


def test_the_patch_map_is_the_distances_upsampled():
    memory = PatchMemory(bank=np.zeros((1, 2), np.float32))
    features = torch.zeros(1, 2, 2, 2)
    features[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # distance 5 in one corner cell
    out = memory.patch_map(features, (8, 8))
    assert out.shape == (1, 1, 8, 8)
    assert out[0, 0, 0, 0] == pytest.approx(5.0) and out[0, 0, 7, 7] == pytest.approx(0.0)


def test_fit_keeps_a_share_of_the_positions_capped():
    rng = np.random.default_rng(3)
    maps = torch.from_numpy(rng.normal(size=(10, 4, 3, 3)).astype(np.float32))
    memory = PatchMemory.fit(maps, coreset=0.25, max_patches=100)
    assert memory.bank.shape == (23, 4)  # ceil(0.25 * 90)
    assert (memory.n_images, memory.n_positions) == (10, 90)
    rows = positions(maps).numpy()
    # Every kept row is one of the training positions.
    assert cdist(memory.bank, rows).min(axis=1).max() == pytest.approx(0.0, abs=1e-6)
    assert PatchMemory.fit(maps, coreset=1.0, max_patches=5).bank.shape == (5, 4)
    with pytest.raises(ValueError, match="at least two images"):
        PatchMemory.fit(maps[:1])
    maps[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="not all finite"):
        PatchMemory.fit(maps)


def test_save_and_load_round_trip_and_bad_files_name_themselves(tmp_path):
    memory = PatchMemory(
        bank=np.arange(12, dtype=np.float32).reshape(3, 4), n_images=2, n_positions=9
    )
    path = tmp_path / "patches.npz"
    memory.save(path)
    back = PatchMemory.load(path)
    np.testing.assert_array_equal(back.bank, memory.bank)
    assert (back.n_images, back.n_positions) == (2, 9)
    assert not list(tmp_path.glob(".*tmp*"))

    path.write_bytes(b"half a file")
    with pytest.raises(ModelFolderError, match=r"patches\.npz cannot be read"):
        PatchMemory.load(path)
    np.savez(path, bank=np.zeros((0, 4), np.float32), n_images=0, n_positions=0)
    with pytest.raises(ModelFolderError, match=r"patches\.npz: bank of shape \(0, 4\)"):
        PatchMemory.load(path)


def test_the_scale_ranks_pixels_as_the_sum_of_standardised_maps():
    rng = np.random.default_rng(4)
    model_map = rng.gamma(0.5, 0.01, 5000)  # skewed, as a segmenter's probabilities
    patches = rng.normal(3.0, 0.7, 5000).clip(0)
    scale = patch_scale(model_map, patches, weight=0.5)
    assert scale == pytest.approx(0.5 * model_map.std() / patches.std())
    combined = model_map + scale * patches
    z_sum = (model_map - model_map.mean()) / model_map.std() + 0.5 * (
        patches - patches.mean()
    ) / patches.std()
    # An increasing affine map of the z-sum: the same ranking, and never negative.
    np.testing.assert_allclose(
        combined, model_map.std() * z_sum + model_map.mean() + scale * patches.mean(), rtol=1e-9
    )
    assert combined.min() >= 0
    assert patch_scale(model_map, np.full(10, 2.0), weight=0.5) == 0.0
    assert patch_scale(np.zeros(10), np.arange(10.0), weight=0.5) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"weight": 0, "coreset": 0.25, "max_patches": 10}, "scoring.patch_map.weight"),
        ({"weight": 0.5, "coreset": 1.5, "max_patches": 10}, "scoring.patch_map.coreset"),
        ({"weight": 0.5, "coreset": 0.25, "max_patches": 0}, "scoring.patch_map.max_patches"),
    ],
)
def test_bad_settings_name_their_key(settings, key):
    with pytest.raises(ConfigError, match=key):
        check_patch_settings(**settings)
