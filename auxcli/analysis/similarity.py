"""Linear centered kernel alignment (CKA) between two representations of the same examples.

Kornblith, Norouzi, Lee and Hinton 2019, "Similarity of Neural Network Representations Revisited"
(ICML), eq. (4) with a linear kernel: for feature matrices X (n x p) and Y (n x q) whose columns are
centred,

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F),

in [0, 1], 1 for X and Y that differ by an orthogonal transform and an isotropic scaling (the
invariances the paper argues for), and comparable across layers of different widths. The feature-space
form above costs O(n (p + q)^2), not the O(n^2) of the Gram-matrix form, so 10,000 test images fit easily.
"""

from __future__ import annotations

import torch


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of features `x` (n, p) and `y` (n, q) of the same n examples (row i of both is example i).

    Computed in float64 after centring each column; NaN when either representation is constant."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs (n, p) and (n, q) features of the same n examples, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norms = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norms) if norms > 0 else float("nan")


def cka_matrix(features: list[torch.Tensor]) -> list[list[float]]:
    """Linear CKA between every pair of feature matrices (symmetric; computed once per pair)."""
    k = len(features)
    matrix = [[float("nan")] * k for _ in range(k)]
    for i in range(k):
        for j in range(i, k):
            matrix[i][j] = matrix[j][i] = linear_cka(features[i], features[j])
    return matrix
