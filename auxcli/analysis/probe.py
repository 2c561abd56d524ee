"""A closed-form ridge classifier on frozen features: a fast stand-in for the study's linear probe.

The study's probe (paper.md, Table 2) trains a linear layer on frozen features with SGD for 300
epochs. This one fits one-hot targets by ridge regression (least squares with an L2 penalty, the
classifier of scikit-learn's `RidgeClassifier`) in closed form, seconds instead of hours; its
accuracies track, but are not, Table 2's numbers, and every output says so (`METHOD`).

Features are standardised with the training split's mean and standard deviation; the penalty is
lambda = alpha * n over `ALPHAS` (standardised features make X^T X ~ n I), chosen by accuracy on a
fixed 10% hold-out of the training split, then refitted on the whole training split. One eigen-
decomposition of X^T X serves every alpha: W(lambda) = V diag(1 / (s + lambda)) V^T X^T Y.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

METHOD = ("closed-form ridge classifier on frozen clean features (fast companion, not the study's 300-epoch "
          "SGD linear probe of Table 2)")
ALPHAS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
HOLDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class ProbeResult:
    train_acc: float  # on the whole training split, after the refit
    test_acc: float
    alpha: float  # the penalty chosen on the hold-out, as a multiple of n


def ridge_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                num_classes: int, *, alphas: tuple[float, ...] = ALPHAS, seed: int = 0) -> ProbeResult:
    """Fit on (`train_x` (n, d), `train_y` (n,) int) and score on the test split; see the module docstring."""
    mean = train_x.double().mean(0)
    std = train_x.double().std(0, correction=0).clamp_min(1e-8)
    train_z = (train_x.double() - mean) / std
    test_z = (test_x.double() - mean) / std
    n = train_z.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = order[:max(1, int(n * HOLDOUT_FRACTION))] if n >= 10 else order[:0]
    fit = order[len(held):]
    best_alpha = alphas[0]
    if len(held):
        solve = _ridge_solver(train_z[fit], train_y[fit], num_classes)
        scores = [(_accuracy(solve(alpha), train_z[held], train_y[held]), alpha) for alpha in alphas]
        best_alpha = max(scores, key=lambda s: (s[0], s[1]))[1]  # ties: the stronger penalty
    weights = _ridge_solver(train_z, train_y, num_classes)(best_alpha)
    return ProbeResult(train_acc=_accuracy(weights, train_z, train_y), test_acc=_accuracy(weights, test_z, test_y),
                       alpha=best_alpha)


def _ridge_solver(x: torch.Tensor, y: torch.Tensor, num_classes: int):
    """alpha -> (W (d, k), b (k,)) for centred least squares on one-hot targets."""
    x_mean = x.mean(0)
    xc = x - x_mean
    targets = torch.nn.functional.one_hot(y.long(), num_classes).double()
    t_mean = targets.mean(0)
    eigenvalues, vectors = torch.linalg.eigh(xc.T @ xc)
    projected = vectors.T @ (xc.T @ (targets - t_mean))
    n = x.shape[0]

    def solve(alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        w = vectors @ (projected / (eigenvalues.clamp_min(0) + alpha * n)[:, None])
        return w, t_mean - x_mean @ w

    return solve


def _accuracy(weights: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    w, b = weights
    return float(((x @ w + b).argmax(1) == y).double().mean()) if len(y) else float("nan")
