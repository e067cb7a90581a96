"""Learning-curve aggregation over seeds: interpolation where curves overlap, evaluation index where they do not."""
import numpy as np

from modelrl.runner.plots import aggregate


def test_overlapping_curves_are_interpolated_on_the_common_range():
    xs = [np.array([0.0, 10.0, 20.0]), np.array([5.0, 15.0, 30.0])]
    ys = [np.array([0.0, 10.0, 20.0]), np.array([5.0, 15.0, 30.0])]  # both y = x
    grid, mean, std, lo, hi = aggregate(xs, ys)
    assert grid[0] == 5.0 and grid[-1] == 20.0  # only where both seeds have data
    np.testing.assert_allclose(mean, grid)
    np.testing.assert_allclose(std, 0.0, atol=1e-12)


def test_disjoint_curves_are_matched_by_evaluation_index():
    xs = [np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0])]  # wall-clock times that never meet
    ys = [np.array([-10.0, -4.0]), np.array([-20.0, -6.0, -1.0])]
    grid, mean, std, lo, hi = aggregate(xs, ys)
    np.testing.assert_allclose(grid, [2.0, 3.0])
    np.testing.assert_allclose(mean, [-15.0, -5.0])
    np.testing.assert_allclose(lo, [-20.0, -6.0])
    np.testing.assert_allclose(hi, [-10.0, -4.0])
    np.testing.assert_allclose(std, [5.0, 1.0])


def test_one_curve_is_returned_as_it_is():
    x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    grid, mean, std, lo, hi = aggregate([x], [y])
    assert grid is x and mean is y and not std.any()
