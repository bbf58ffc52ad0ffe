"""scmsi._backed: rows of matrices in memory or on disk, and one dense()."""

import anndata as ad
import numpy as np
from scipy import sparse

from scmsi._backed import dense, in_memory, read_rows, row_blocks


def test_dense_of_sparse_and_dense():
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert dense(sparse.csr_matrix(x)).tolist() == x.tolist()
    out = dense(x, np.float32)
    assert out.dtype == np.float32 and out.tolist() == x.tolist()


def test_read_rows_keeps_the_order_on_disk(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    path = tmp_path / "a.h5ad"
    ad.AnnData(sparse.csr_matrix(x)).write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    rows = np.array([7, 2, 5])
    assert not in_memory(backed.X) and in_memory(x)
    np.testing.assert_array_equal(dense(read_rows(backed.X, rows)), x[rows])
    np.testing.assert_array_equal(read_rows(x, rows), x[rows])
    blocks = list(row_blocks(x, entries=12))  # 3 rows x 4 features a block
    assert [s for s, _ in blocks] == [0, 3, 6, 9]
    np.testing.assert_array_equal(np.vstack([b for _, b in blocks]), x)
    backed.file.close()
