"""scmsi._fusion: fusion rules, modality weights and top-k truncation, on arrays."""

from typing import get_args

import numpy as np
import pytest
from scipy import sparse

import scmsi
from scmsi._fusion import (
    FUSIONS,
    Fusion,
    check_fusion,
    fuse_coefficients,
    fusion_scale,
    modality_weights,
    precision_weights,
    top_k_sparse,
)


def test_one_list_of_fusions():
    assert (
        FUSIONS == get_args(Fusion) == ("reliability", "product", "mean", "precision", "adaptive")
    )
    assert scmsi.FUSIONS is FUSIONS


def test_check_fusion_names_the_valid_values():
    for f in FUSIONS:
        check_fusion(f)
    check_fusion(None, allow_none=True)
    with pytest.raises(ValueError, match="fusion must be one of .*'mean'.*got 'max'"):
        check_fusion("max")
    with pytest.raises(ValueError, match="got None"):
        check_fusion(None)


class _Model:
    """The two things fusion_scale asks of a model."""

    def __init__(self, names):
        self.modality_names = names
        self.calls = 0

    def get_modality_weights(self, data, indices=None, batch_size=None, method="adaptive"):
        assert method == "adaptive"  # the scale is the adaptive weights' statistic
        self.calls += 1
        import pandas as pd

        out = pd.DataFrame(np.full((3, len(self.modality_names)), 0.5))
        out.attrs["scale"] = np.array([2.0, 3.0])
        return out


def test_fusion_scale_takes_a_pass_only_for_adaptive_with_two_modalities():
    two, one = _Model(["rna", "prot"]), _Model(["rna"])
    assert fusion_scale(two, None, "mean") is None
    assert fusion_scale(two, None, "precision") is None
    assert fusion_scale(one, None, "adaptive") is None
    assert two.calls == 0 and one.calls == 0
    np.testing.assert_array_equal(fusion_scale(two, None, "adaptive"), [2.0, 3.0])
    assert two.calls == 1
    given = np.array([1.0, 1.0])
    assert fusion_scale(two, None, "adaptive", scale=given) is given  # the reference's scale
    assert two.calls == 1


def test_fuse_coefficients_averages_only_observed_modalities():
    a = np.array([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 4.0], [0.0, 3.0, 1.0]])
    fused = fuse_coefficients([a, b], [np.array([True, True]), np.array([True, False])])
    np.testing.assert_allclose(fused[0], [0.25, 0.25, 0.5])  # equal weights, rows normalised
    np.testing.assert_allclose(fused[1], [1.0, 0.0, 0.0])  # cell 1 lacks b: a alone
    w = np.array([[0.9, 0.1], [0.5, 0.5]])
    np.testing.assert_allclose(fuse_coefficients([a, b], weights=w)[0], [0.45, 0.45, 0.1])


def test_modality_weights_favour_the_modality_that_explains_all():

    rng = np.random.default_rng(0)
    n = 50
    err = rng.uniform(0.9, 1.1, (n, 2, 2))
    err[:, 1, 0] *= 5  # modality 1's neighbours rebuild modality 0 badly
    w = modality_weights(err)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    assert (w[:, 0] > w[:, 1]).all()
    c = [rng.random((n, 7)), rng.random((n, 7))]
    np.testing.assert_allclose(fuse_coefficients(c, weights=w).sum(1), 1.0, rtol=1e-5)


def test_modality_weights_leave_out_missing_modalities():

    rng = np.random.default_rng(0)
    err = rng.uniform(0.9, 1.1, (60, 2, 2))
    err[:, :, 0] = 1.0  # modality 0's scale is the same whichever cells it is taken over
    lacks = np.arange(60) < 40  # most cells lack modality 1
    err[lacks, 1, :] = np.nan
    err[lacks, :, 1] = np.nan
    w = modality_weights(err)
    np.testing.assert_array_equal(w[lacks], [[1.0, 0.0]] * 40)
    # The complete cells' weights are those of the complete cells alone: the scale of
    # modality 1 comes from the cells that have it.
    np.testing.assert_allclose(w[~lacks], modality_weights(err[~lacks]), rtol=1e-6)


def test_precision_weights_are_inverse_variances():

    var = np.array([[1.0, 3.0], [2.0, 2.0], [0.5, np.inf], [np.inf, np.inf]])
    w = precision_weights(var)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w[0], [0.75, 0.25], rtol=1e-6)  # 1/1 : 1/3
    np.testing.assert_allclose(w[1], [0.5, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(w[2], [1.0, 0.0])  # inf: the cell lacks the modality
    np.testing.assert_allclose(w[3], [0.5, 0.5])  # no modality: equal (unused) weights


def test_top_k_sparse_keeps_each_rows_largest():
    rng = np.random.default_rng(0)
    dense = rng.random((50, 30)).astype(np.float32) * (rng.random((50, 30)) < 0.6)
    top = top_k_sparse(dense, 5)
    assert sparse.isspmatrix_csr(top) and top.shape == dense.shape
    for i in range(50):
        expected = np.sort(dense[i])[::-1][:5]
        row = top[i].toarray().ravel()
        assert np.allclose(np.sort(row[row > 0])[::-1], expected[expected > 0])
        assert np.array_equal(row[row > 0], dense[i][row > 0])
    assert (top_k_sparse(dense, 30).toarray() == dense).all()


def test_weight_methods_are_the_weighted_fusions():
    from scmsi._fusion import WeightMethod, check_weight_method

    assert set(get_args(WeightMethod)) == set(FUSIONS) - {"mean", "product"}
    for m in get_args(WeightMethod):
        check_weight_method(m)
    with pytest.raises(ValueError, match="method must be one of .* got 'mean'"):
        check_weight_method("mean")
