"""The analysis figures (matplotlib's object API on Agg, as `report/plots.py`): CKA heatmap, 2-D embedding."""

from __future__ import annotations

import math

import torch
from matplotlib.figure import Figure


def cka_heatmap(labels: list[str], matrix: list[list[float]], *, layer: str) -> Figure:
    """Linear CKA between every pair of runs, 0 (white) to 1 (dark), each cell annotated."""
    k = len(labels)
    side = max(3.5, 0.7 * k + 2.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(k), labels, fontsize="small")
    for i in range(k):
        for j in range(k):
            value = matrix[i][j]
            ax.text(j, i, "nan" if math.isnan(value) else f"{value:.2f}", ha="center", va="center",
                    fontsize="x-small", color="white" if value > 0.6 else "black")
    fig.suptitle(f"linear CKA of {layer} features (test set)", fontsize="medium")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def embedding_scatter(coords: torch.Tensor, groups: torch.Tensor, group_names: list[str], *, title: str,
                      colour_label: str) -> Figure:
    """Points `coords` (n, 2) coloured by `groups` (n,) int; a legend when there are at most 20 groups."""
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    cmap = "tab20" if len(group_names) <= 20 else "nipy_spectral"
    scatter = ax.scatter(coords[:, 0].numpy(), coords[:, 1].numpy(), c=groups.numpy(), cmap=cmap, s=6,
                         vmin=0, vmax=max(len(group_names) - 1, 1), linewidths=0)
    if len(group_names) <= 20:
        handles = [ax.scatter([], [], color=scatter.cmap(scatter.norm(k)), s=12, label=name)
                   for k, name in enumerate(group_names)]
        # "outside" lets the constrained layout make room, so neither legend nor title is clipped
        fig.legend(handles=handles, title=colour_label, fontsize="x-small", title_fontsize="small",
                   loc="outside right center", frameon=False)
    ax.set(xticks=[], yticks=[])
    fig.suptitle(title, fontsize="medium")
    return fig
