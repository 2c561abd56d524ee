"""RICAP (Takahashi et al. 2018): patch four images of the batch around one boundary point.

Facts from the official implementation (jackryo/ricap, trainers.py, `TrainerRICAP.ricap`), re-expressed
here as one batched gather:
- one boundary point per *batch*: w = round(W * Beta(beta, beta)), h = round(H * Beta(beta, beta)),
  drawn once per call (`np.random.beta` is called twice per batch, not per sample; `np.round` and
  `torch.round` both round half to even);
- the four patches have sizes (w, h), (W - w, h), (w, H - h), (W - w, H - h);
- patch k takes its images from the batch through its own random permutation (`torch.randperm`), and is
  cropped from them at one random position per patch (x_k uniform over 0..W - w_k, y_k over 0..H - h_k),
  shared by the batch;
- the class loss is the area-weighted sum of the four labels' losses, weight_k = w_k * h_k / (W * H).
The official code names the first image axis x; here w runs along the width (columns) and h along the
height (rows), and the patches are ordered top-left, top-right, bottom-left, bottom-right.

The study (docs/study.md, "RICAP + segmentation") segments which source each pixel came from and notes the
task is ambiguous when the boundary lies on an edge; `keep_off_edges` keeps it 1 px inside.
"""

from __future__ import annotations

import math

import torch

from auxcli.augment.targets import Targets

NUM_RICAP_SOURCES = 4  # top-left, top-right, bottom-left, bottom-right
_GAMMA_ROUNDS = 16  # Marsaglia-Tsang candidates per variate; all rejected with probability < 0.05**16


def _log_standard_gamma(
    concentration: float, shape: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """log of Gamma(concentration, 1) variates drawn only from `generator` (torch's own gamma sampler
    takes no generator).

    Marsaglia & Tsang (2000), "A simple method for generating gamma variables": for a >= 1, with
    d = a - 1/3, c = 1/sqrt(9d), x ~ N(0,1), v = (1 + cx)^3, u ~ U(0,1], accept d*v when
    v > 0 and log u < x^2/2 + d - dv + d log v (acceptance >= 95%). For a < 1 the variate is
    Gamma(a + 1) * U^(1/a) (their boosting step), kept in log space so tiny shapes do not underflow.
    A fixed number of candidates is drawn and the first accepted one kept: no host synchronisation and a
    fixed generator consumption, hence deterministic. If all candidates are rejected (probability below
    1e-20) the variate falls back to d, the distribution's centre.
    """
    alpha = concentration + 1.0 if concentration < 1.0 else concentration
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    x = torch.randn((_GAMMA_ROUNDS, *shape), generator=generator, device=device)
    u = 1.0 - torch.rand((_GAMMA_ROUNDS, *shape), generator=generator, device=device)  # (0, 1]
    v = (1.0 + c * x) ** 3
    log_v = torch.log(v.clamp_min(torch.finfo(v.dtype).tiny))
    accepted = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * log_v)
    first = accepted.to(torch.uint8).argmax(0, keepdim=True)  # first accepted round
    chosen = torch.where(accepted.any(0), log_v.gather(0, first)[0], torch.zeros_like(log_v[0]))
    log_gamma = math.log(d) + chosen
    if concentration < 1.0:
        boost = 1.0 - torch.rand(shape, generator=generator, device=device)
        log_gamma = log_gamma + torch.log(boost) / concentration
    return log_gamma


def sample_beta(
    a: float, b: float, shape: tuple[int, ...], *, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """Beta(a, b) variates (float32) drawn only from `generator`, as X / (X + Y) with X ~ Gamma(a),
    Y ~ Gamma(b), computed in log space so the result stays in [0, 1] without NaN even for tiny a, b
    (where most of the mass lies within float32 rounding of 0 and 1)."""
    device = torch.device(device)
    log_x = _log_standard_gamma(a, shape, generator, device)
    log_y = _log_standard_gamma(b, shape, generator, device)
    return torch.exp(log_x - torch.logaddexp(log_x, log_y))


def ricap(
    images: torch.Tensor,
    targets: Targets,
    generator: torch.Generator,
    *,
    beta: float,
    keep_off_edges: bool = False,
) -> tuple[torch.Tensor, Targets]:
    """Patch four images of the batch into each output image around one boundary point (w, h).

    Returns the patched images and targets in which
    - every `classes[name]` (N,) becomes (N, 4): the labels of the sources, top-left, top-right,
      bottom-left, bottom-right;
    - `mix_weights` (N, 4) float32 holds each patch's area / (H * W) (sums to 1; 0 for an empty patch,
      whose label is still a valid index, so area-weighted losses stay finite);
    - `maps["ricap_sources"]` (N, H, W) int64 in 0..3 names the source of every pixel;
    - pixel maps already present, (N, H, W) (e.g. "cutout_mask"), are re-patched like the pixels, so they
      still describe the output image; other per-image maps (N, ...) (e.g. "crop_offset", "flipped")
      become (N, 4, ...), one entry per source, like the labels.
    `keep_off_edges` clamps the boundary to 1..W-1 (1..H-1) so all four sources are visible; a boundary
    drawn inside is left unchanged, one on an edge moves to a 1 px strip.
    """
    if targets.mix_weights is not None:
        raise ValueError("ricap expects unmixed targets; RICAP was already applied to this batch")
    n, channels, height, width = images.shape
    device = images.device
    ratio = sample_beta(beta, beta, (2,), generator=generator, device=device)
    w = torch.round(ratio[0] * width).long()
    h = torch.round(ratio[1] * height).long()
    if keep_off_edges:
        w, h = w.clamp(1, width - 1), h.clamp(1, height - 1)
    patch_w = torch.stack([w, width - w, w, width - w])  # (4,)
    patch_h = torch.stack([h, h, height - h, height - h])
    # Crop position of each patch inside its sources, uniform over the positions where it fits.
    u = torch.rand((2, NUM_RICAP_SOURCES), generator=generator, device=device)
    crop_x = torch.minimum((u[0] * (width - patch_w + 1)).long(), width - patch_w)
    crop_y = torch.minimum((u[1] * (height - patch_h + 1)).long(), height - patch_h)
    perms = torch.stack([torch.randperm(n, generator=generator, device=device)
                         for _ in range(NUM_RICAP_SOURCES)], dim=1)  # (N, 4): source images

    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    below, right = rows >= h, cols >= w
    sources = below[:, None].long() * 2 + right[None, :].long()  # (H, W) in 0..3
    src_row = rows[:, None] - torch.where(below, h, 0)[:, None] + crop_y[sources]  # (H, W)
    src_col = cols[None, :] - torch.where(right, w, 0)[None, :] + crop_x[sources]
    src_pixel = src_row * width + src_col  # (H, W): position inside the source image
    src_img = perms.gather(1, sources.view(1, -1).expand(n, -1)).view(n, height, width)  # (N, H, W)

    # A flat gather per channel (on CPU several times faster than 4-tensor advanced indexing).
    plane = height * width
    src_flat = src_img * (channels * plane) + src_pixel
    patched = torch.stack([torch.take(images, src_flat + c * plane) for c in range(channels)], dim=1)

    def mix(value: torch.Tensor) -> torch.Tensor:
        if value.dim() == 3 and value.shape[1:] == (height, width):
            return torch.take(value, src_img * plane + src_pixel)  # a pixel map follows its pixels
        return value[perms]  # a per-image value: one per source

    weights = (patch_w * patch_h).float() / (height * width)
    maps = {key: mix(value) for key, value in targets.maps.items()}
    maps["ricap_sources"] = sources.expand(n, height, width).contiguous()
    return patched, Targets(
        classes={name: labels[perms] for name, labels in targets.classes.items()},
        mix_weights=weights.expand(n, NUM_RICAP_SOURCES).contiguous(),
        maps=maps,
    )
