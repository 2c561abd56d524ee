"""2-D embeddings of a feature matrix for plotting: PCA (always), t-SNE (with scikit-learn).

PCA projects the centred features on their first two principal axes (the top right-singular vectors
of the centred matrix; signs fixed so the largest-magnitude loading of each axis is positive, so the
picture does not flip between runs). t-SNE (van der Maaten and Hinton 2008) is scikit-learn's
`TSNE` with PCA initialisation and a fixed seed; it needs the optional scikit-learn package.
"""

from __future__ import annotations

import torch

from auxcli.errors import AnalysisError

EMBEDDINGS: tuple[str, ...] = ("pca", "tsne")


def pca_2d(features: torch.Tensor) -> torch.Tensor:
    """float64 (n, 2) coordinates on the first two principal axes of `features` (n, d) (zeros when d < 2)."""
    x = features.double() - features.double().mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:2]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    coords = x @ (axes * torch.where(signs == 0, 1.0, signs)).T
    if coords.shape[1] < 2:
        coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 2 - coords.shape[1])], 1)
    return coords


def tsne_2d(features: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """float64 (n, 2) t-SNE coordinates; `AnalysisError` when scikit-learn is not installed."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise AnalysisError("--embedding tsne needs scikit-learn (pip install scikit-learn); "
                            "--embedding pca needs nothing extra.") from None
    n = features.shape[0]
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
    coords = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(
        features.double().numpy())
    return torch.from_numpy(coords).double()


def embed_2d(features: torch.Tensor, method: str) -> torch.Tensor:
    if method == "pca":
        return pca_2d(features)
    if method == "tsne":
        return tsne_2d(features)
    raise AnalysisError(f"unknown --embedding {method!r}; allowed: {', '.join(EMBEDDINGS)}.")
