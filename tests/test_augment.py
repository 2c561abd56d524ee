"""Property tests of the batched augmentations on real tensors: each transform records the targets it
actually applied (recovered from the pixels of images that encode their own coordinates or index)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.transforms import functional as TF

from auxcli.augment.crop import crop_block, random_crop
from auxcli.augment.cutout import cutout
from auxcli.augment.flip import random_flip
from auxcli.augment.normalize import normalize
from auxcli.augment.pipeline import build_eval_transform, build_train_augment
from auxcli.augment.ricap import ricap, sample_beta
from auxcli.augment.targets import Targets
from auxcli.spec import AugmentSpec
from auxcli.tasks import mixed_cross_entropy

SIZE = 32
EXAMPLES = settings(max_examples=30, deadline=None)
seeds = st.integers(0, 2**31 - 1)
batch_sizes = st.integers(1, 8)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="needs CUDA"))]


def generator(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def coordinate_images(n: int) -> torch.Tensor:
    """Float images whose channels hold row + 1, column + 1 and image index + 1: never 0, so zero padding
    shows, and every pixel says where it came from."""
    rows = torch.arange(SIZE).view(1, SIZE, 1).expand(n, SIZE, SIZE)
    cols = torch.arange(SIZE).view(1, 1, SIZE).expand(n, SIZE, SIZE)
    index = torch.arange(n).view(n, 1, 1).expand(n, SIZE, SIZE)
    return torch.stack([rows, cols, index], dim=1).float() + 1


def labelled(n: int) -> Targets:
    return Targets(classes={"main": torch.arange(n)})


def beta_cdf(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Regularised incomplete beta I_x(a, b) (float64): the power series
    B(x; a, b) = x^a sum_n (1 - b)_n / n! x^n / (a + n) for x <= 1/2, and I_x(a, b) = 1 - I_{1-x}(b, a)."""

    def series(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
        n = torch.arange(1, 400, dtype=torch.float64)
        coef = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod((n - b) / n, 0)])
        powers = x[:, None] ** torch.arange(400, dtype=torch.float64)
        log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
        return x**a * (coef * powers / (a + torch.arange(400))).sum(1) / math.exp(log_beta)

    x = x.double().clamp(0, 1)
    low = x <= 0.5
    return torch.where(low, series(torch.where(low, x, 0.5), a, b),
                       1 - series(torch.where(low, 0.5, 1 - x), b, a))


def ks_statistic(samples: torch.Tensor, a: float, b: float) -> float:
    """Kolmogorov-Smirnov distance between the samples' empirical CDF and Beta(a, b)."""
    cdf = beta_cdf(samples.sort().values, a, b)
    n = cdf.numel()
    steps = torch.arange(1, n + 1, dtype=torch.float64) / n
    return max((steps - cdf).max().item(), (cdf - (steps - 1 / n)).max().item())


# --- random crop -------------------------------------------------------------------------------------

@EXAMPLES
@given(seed=seeds, n=batch_sizes, padding=st.integers(0, 8))
def test_crop_offset_is_the_one_applied(seed: int, n: int, padding: int) -> None:
    images = coordinate_images(n)
    cropped, targets = random_crop(images, labelled(n), generator(seed), padding=padding)
    offset = targets.maps["crop_offset"]
    assert offset.dtype == torch.int64 and offset.shape == (n, 2)
    assert offset.min() >= 0 and offset.max() <= 2 * padding
    # The centre pixel always comes from the image: it says which row and column it was.
    centre = SIZE // 2
    assert torch.equal(cropped[:, 0, centre, centre].long() - 1 - centre + padding, offset[:, 0])
    assert torch.equal(cropped[:, 1, centre, centre].long() - 1 - centre + padding, offset[:, 1])
    for i in range(n):  # every pixel matches torchvision's pad-then-crop at the recorded offset
        padded = TF.pad(images[i], [padding])
        expected = TF.crop(padded, int(offset[i, 0]), int(offset[i, 1]), SIZE, SIZE)
        assert torch.equal(cropped[i], expected)


@EXAMPLES
@given(seed=seeds, n=batch_sizes)
def test_crop_label_is_the_block_of_the_offset_used(seed: int, n: int) -> None:
    cropped, targets = random_crop(coordinate_images(n), labelled(n), generator(seed), padding=4)
    centre = SIZE // 2
    dy = cropped[:, 0, centre, centre].long() - 1 - centre + 4  # offsets recovered from the pixels
    dx = cropped[:, 1, centre, centre].long() - 1 - centre + 4
    label = crop_block(targets.maps["crop_offset"], None, padding=4, mode="sampled")
    assert torch.equal(label, (dy // 3) * 3 + dx // 3)


def test_crop_blocks_split_each_axis_into_three_near_equal_runs() -> None:
    for padding in range(1, 12):
        positions = torch.arange(2 * padding + 1)
        offsets = torch.stack(torch.meshgrid(positions, positions, indexing="ij"), -1).view(-1, 2)
        labels = crop_block(offsets, None, padding=padding, mode="sampled")
        counts = torch.bincount(labels, minlength=9)
        assert labels.min() == 0 and labels.max() == 8
        assert counts.max() - counts.min() <= 2 * padding + 1  # axis runs differ by at most one position
        if padding == 4:  # the study's grid: 3x3 blocks of 3x3 positions
            assert torch.equal(labels, (offsets[:, 0] // 3) * 3 + offsets[:, 1] // 3)
            assert torch.equal(counts, torch.full((9,), 9))


@EXAMPLES
@given(seed=seeds, n=batch_sizes, padding=st.integers(1, 8))
def test_visible_label_of_a_flipped_crop_is_the_label_of_the_mirrored_image(seed: int, n: int,
                                                                             padding: int) -> None:
    images = coordinate_images(n)
    g = generator(seed)
    out, targets = random_flip(*random_crop(images, labelled(n), g, padding=padding), g)
    offset, flipped = targets.maps["crop_offset"], targets.maps["flipped"]
    visible = crop_block(offset, flipped, padding=padding, mode="visible")
    sampled = crop_block(offset, flipped, padding=padding, mode="sampled")
    assert torch.equal(sampled, crop_block(offset, None, padding=padding, mode="sampled"))
    for i in range(n):
        dy, dx = int(offset[i, 0]), int(offset[i, 1])
        source = images[i].flip(-1) if flipped[i] else images[i]
        dx_seen = 2 * padding - dx if flipped[i] else dx
        # What the image shows is an unflipped crop of the mirrored image at (dy, 2p - dx) ...
        assert torch.equal(out[i], TF.crop(TF.pad(source, [padding]), dy, dx_seen, SIZE, SIZE))
        # ... and the visible label is that crop's label.
        seen = torch.tensor([[dy, dx_seen]])
        assert visible[i] == crop_block(seen, None, padding=padding, mode="sampled")[0]


# --- flip --------------------------------------------------------------------------------------------

@EXAMPLES
@given(seed=seeds, n=batch_sizes)
def test_flip_mirrors_exactly_the_recorded_images(seed: int, n: int) -> None:
    images = coordinate_images(n)
    out, targets = random_flip(images, labelled(n), generator(seed))
    flipped = targets.maps["flipped"]
    assert flipped.dtype == torch.bool and flipped.shape == (n,)
    expected = torch.where(flipped[:, None, None, None], images.flip(-1), images)
    assert torch.equal(out, expected)


def test_flip_probability_is_one_half() -> None:
    n = 20_000
    _, targets = random_flip(torch.zeros(n, 1, 1, 2), labelled(n), generator(0))
    assert abs(targets.maps["flipped"].float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / n)


# --- cutout ------------------------------------------------------------------------------------------

def no_zero_images(n: int, seed: int) -> torch.Tensor:
    """Normalised images without a single 0: integers 0..255 minus the non-integer mean 127.5."""
    raw = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=generator(seed)).float()
    return normalize(raw, torch.full((3,), 0.5), torch.full((3,), 0.25))


@EXAMPLES
@given(seed=seeds, n=batch_sizes, size=st.integers(1, SIZE))
def test_cutout_mask_is_exactly_the_zeroed_pixels(seed: int, n: int, size: int) -> None:
    images = no_zero_images(n, seed)
    assert (images != 0).all()
    out, targets = cutout(images, labelled(n), generator(seed), size=size)
    mask = targets.maps["cutout_mask"]
    assert mask.dtype == torch.bool and mask.shape == (n, SIZE, SIZE)
    assert torch.equal((out == 0).all(1), mask)
    assert torch.equal((out == 0).any(1), mask)  # all channels or none
    assert torch.equal(out[~mask[:, None].expand_as(out)], images[~mask[:, None].expand_as(images)])
    rows, cols = mask.any(2), mask.any(1)
    assert torch.equal(mask, rows[:, :, None] & cols[:, None, :])  # one axis-aligned rectangle
    for axis in (rows, cols):  # of side `size`, clipped at the border, around a centre in the image
        first = axis.long().argmax(1)
        extent = axis.sum(1)
        assert (extent >= 1).all() and (extent <= size).all()
        touches_edge = (first == 0) | (first + extent == SIZE)
        assert ((extent == size) | touches_edge).all()


def test_cutout_centre_is_uniform_over_the_image() -> None:
    n, size = 6400, 16
    _, targets = cutout(torch.ones(n, 1, SIZE, SIZE), labelled(n), generator(1), size=size)
    rows = targets.maps["cutout_mask"].any(2)
    first, extent = rows.long().argmax(1), rows.sum(1)
    top = torch.where(first > 0, first, first + extent - size)  # unclip: rectangle top row
    counts = torch.bincount(top + size // 2, minlength=SIZE)
    assert counts.numel() == SIZE  # centres lie in 0..31
    expected = n / SIZE
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 61.1  # chi-square, 31 degrees of freedom, p = 0.001


# --- RICAP -------------------------------------------------------------------------------------------

def quadrant_boundary(sources: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, h) of every sample from its source map: columns left of the boundary, rows above it."""
    w = (sources[:, 0, :] % 2 == 0).sum(1)
    h = (sources[:, :, 0] < 2).sum(1)
    return w, h


@EXAMPLES
@given(seed=seeds, n=batch_sizes, beta=st.floats(0.05, 3.0), keep_off_edges=st.booleans())
def test_ricap_sources_weights_and_labels_match_the_pixels(seed: int, n: int, beta: float,
                                                           keep_off_edges: bool) -> None:
    images = coordinate_images(n)
    out, targets = ricap(images, labelled(n), generator(seed), beta=beta, keep_off_edges=keep_off_edges)
    sources, labels, weights = targets.maps["ricap_sources"], targets.classes["main"], targets.mix_weights
    assert sources.dtype == torch.int64 and sources.shape == (n, SIZE, SIZE)
    assert labels.shape == (n, 4) and weights.shape == (n, 4) and weights.dtype == torch.float32
    # Quadrants in the order top-left, top-right, bottom-left, bottom-right around (w, h).
    w, h = quadrant_boundary(sources)
    rows, cols = torch.arange(SIZE), torch.arange(SIZE)
    layout = (rows[None, :, None] >= h[:, None, None]) * 2 + (cols[None, None, :] >= w[:, None, None])
    assert torch.equal(sources, layout)
    # Every pixel shows the source its map names (image index = label here).
    assert torch.equal(out[:, 2].long() - 1, labels.gather(1, sources.view(n, -1)).view(n, SIZE, SIZE))
    # Weights are the patch areas and sum to 1.
    areas = torch.stack([(sources == k).sum((1, 2)) for k in range(4)], 1).float() / SIZE**2
    assert torch.allclose(weights, areas) and torch.allclose(weights.sum(1), torch.ones(n))
    # Each patch is a contiguous crop of one source: pixel coordinates shift by one constant per patch.
    for channel, grid in ((0, rows[:, None]), (1, cols[None, :])):
        shift = out[:, channel] - grid
        for k in range(4):
            region = sources == k
            high = shift.masked_fill(~region, -math.inf).amax((1, 2))
            low = shift.masked_fill(~region, math.inf).amin((1, 2))
            present = region.any((1, 2))
            assert torch.equal(high[present], low[present])
    if keep_off_edges:
        assert ((w >= 1) & (w <= SIZE - 1) & (h >= 1) & (h <= SIZE - 1)).all()


def test_keep_off_edges_shows_all_four_sources() -> None:
    visible_all, visible_all_default = [], []
    for seed in range(200):
        for keep, record in ((True, visible_all), (False, visible_all_default)):
            _, targets = ricap(torch.zeros(2, 1, SIZE, SIZE), labelled(2), generator(seed), beta=0.3,
                               keep_off_edges=keep)
            present = torch.stack([(targets.maps["ricap_sources"] == k).any((1, 2)) for k in range(4)], 1)
            record.append(bool(present.all()))
    assert all(visible_all)
    assert not all(visible_all_default)  # plain RICAP does put the boundary on an edge


def test_zero_area_patches_give_finite_losses() -> None:
    found = 0
    for seed in range(200):
        _, targets = ricap(torch.zeros(4, 1, SIZE, SIZE), labelled(4), generator(seed), beta=0.3)
        if (targets.mix_weights == 0).any():
            found += 1
            logits = torch.randn(4, 4, requires_grad=True)
            loss = mixed_cross_entropy(logits, targets.classes["main"], targets.mix_weights)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
            assert targets.classes["main"].min() >= 0 and targets.classes["main"].max() < 4
    assert found > 10


def test_ricap_repatches_pixel_maps_and_stacks_per_image_maps() -> None:
    n = 6
    g = generator(3)
    images, targets = random_crop(coordinate_images(n), labelled(n), g, padding=4)
    images, targets = random_flip(images, targets, g)
    images = normalize(images, torch.full((3,), 0.5), torch.full((3,), 0.25))  # padding is no longer 0
    images, targets = cutout(images, targets, g, size=16)
    before = targets
    out, targets = ricap(images, targets, g, beta=1.0)
    assert torch.equal(targets.maps["cutout_mask"], (out == 0).all(1))  # still exactly the zeroed pixels
    source_index = targets.classes["main"]
    assert torch.equal(targets.maps["crop_offset"], before.maps["crop_offset"][source_index])
    assert torch.equal(targets.maps["flipped"], before.maps["flipped"][source_index])
    with pytest.raises(ValueError):
        ricap(out, targets, g, beta=1.0)


def test_beta_cdf_helper_matches_closed_forms() -> None:
    x = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert torch.allclose(beta_cdf(x, 1, 1), x, atol=1e-9)
    assert torch.allclose(beta_cdf(x, 0.5, 0.5), 2 / math.pi * torch.asin(x.sqrt()), atol=1e-6)
    assert torch.allclose(beta_cdf(x, 2, 3), 6 * x**2 - 8 * x**3 + 3 * x**4, atol=1e-9)


@pytest.mark.parametrize(("a", "b"), [(0.3, 0.3), (0.5, 2.0), (2.0, 5.0), (1.0, 1.0)])
def test_sample_beta_follows_beta_distribution(a: float, b: float) -> None:
    n = 20_000
    samples = sample_beta(a, b, (n,), generator=generator(0), device="cpu")
    assert samples.dtype == torch.float32 and torch.isfinite(samples).all()
    assert (samples >= 0).all() and (samples <= 1).all()
    assert ks_statistic(samples, a, b) < 1.95 / math.sqrt(n)  # KS, p = 0.001
    assert ks_statistic(samples, a + 0.1, b) > 1.95 / math.sqrt(n)  # and the check has power


def test_sample_beta_is_finite_and_symmetric_for_tiny_shapes() -> None:
    """Beta(0.02, 0.02) puts most mass within float32 rounding of 0 and 1 (so no KS test), but the
    log-space gamma ratio must still give no NaN and a symmetric split."""
    samples = sample_beta(0.02, 0.02, (20_000,), generator=generator(0), device="cpu")
    assert torch.isfinite(samples).all() and (samples >= 0).all() and (samples <= 1).all()
    assert abs((samples < 0.5).float().mean().item() - 0.5) < 0.02


@pytest.mark.parametrize("keep_off_edges", [False, True])
def test_ricap_boundary_follows_beta_03(keep_off_edges: bool) -> None:
    """w and h are round(32 * Beta(0.3, 0.3)) (clamped to 1..31 when kept off the edges)."""
    boundaries = []
    for seed in range(1500):
        _, targets = ricap(torch.zeros(1, 1, SIZE, SIZE), labelled(1), generator(seed), beta=0.3,
                           keep_off_edges=keep_off_edges)
        boundaries.extend(torch.cat(quadrant_boundary(targets.maps["ricap_sources"])).tolist())
    counts = torch.bincount(torch.tensor(boundaries), minlength=SIZE + 1).double()
    edges = (torch.arange(SIZE + 2, dtype=torch.float64) - 0.5) / SIZE
    probs = beta_cdf(edges[1:], 0.3, 0.3) - beta_cdf(edges[:-1], 0.3, 0.3)
    if keep_off_edges:
        probs[1] += probs[0]
        probs[-2] += probs[-1]
        probs[0] = probs[-1] = 0
        assert counts[0] == 0 and counts[-1] == 0
    used = probs > 0
    expected = probs[used] * len(boundaries)
    chi2 = ((counts[used] - expected) ** 2 / expected).sum().item()
    assert chi2 < 65.2  # chi-square, <= 32 degrees of freedom, p = 0.001


# --- contracts: determinism, device, dtype -----------------------------------------------------------

def all_transforms() -> dict[str, object]:
    return {
        "crop": lambda x, t, g: random_crop(x, t, g, padding=4),
        "flip": random_flip,
        "cutout": lambda x, t, g: cutout(x, t, g, size=16),
        "ricap": lambda x, t, g: ricap(x, t, g, beta=0.3),
        "ricap_off_edges": lambda x, t, g: ricap(x, t, g, beta=0.3, keep_off_edges=True),
        "pipeline": build_train_augment(
            AugmentSpec(cutout={"size": 16}, ricap={"beta": 0.3}), torch.full((3,), 0.5), torch.full((3,), 0.2)
        ),
    }


def assert_same_targets(a: Targets, b: Targets) -> None:
    assert a.classes.keys() == b.classes.keys() and a.maps.keys() == b.maps.keys()
    assert all(torch.equal(a.classes[k], b.classes[k]) for k in a.classes)
    assert all(torch.equal(a.maps[k], b.maps[k]) for k in a.maps)
    assert (a.mix_weights is None) == (b.mix_weights is None)
    assert a.mix_weights is None or torch.equal(a.mix_weights, b.mix_weights)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(all_transforms()))
def test_transform_is_deterministic_and_keeps_device_and_dtype(name: str, device: str) -> None:
    transform = all_transforms()[name]
    n = 16
    raw = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=generator(0), dtype=torch.uint8).to(device)
    images = raw if name == "pipeline" else raw.float()
    targets = Targets(classes={"main": torch.arange(n, device=device)})
    out_a, targets_a = transform(images, targets, generator(7, device))
    out_b, targets_b = transform(images, targets, generator(7, device))
    out_c, _ = transform(images, targets, generator(8, device))
    assert torch.equal(out_a, out_b) and not torch.equal(out_a, out_c)
    assert_same_targets(targets_a, targets_b)
    assert out_a.dtype == torch.float32 and out_a.shape == (n, 3, SIZE, SIZE)
    tensors = [out_a, *targets_a.classes.values(), *targets_a.maps.values()]
    tensors += [] if targets_a.mix_weights is None else [targets_a.mix_weights]
    assert all(t.device.type == torch.device(device).type for t in tensors)
    dtypes = {"crop_offset": torch.int64, "flipped": torch.bool, "cutout_mask": torch.bool,
              "ricap_sources": torch.int64}
    assert all(targets_a.maps[k].dtype == dtypes[k] for k in targets_a.maps)


@EXAMPLES
@given(seed=seeds, n=batch_sizes)
def test_crop_and_flip_move_uint8_pixels_like_float_ones(seed: int, n: int) -> None:
    raw = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=generator(seed), dtype=torch.uint8)
    outputs = []
    for images in (raw, raw.float()):
        g = generator(seed)
        outputs.append(random_flip(*random_crop(images, labelled(n), g, padding=4), g)[0])
    assert outputs[0].dtype == torch.uint8 and torch.equal(outputs[0].float(), outputs[1])


def test_pipeline_is_crop_flip_normalize_cutout_ricap() -> None:
    n, mean, std = 8, torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    raw = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=generator(0), dtype=torch.uint8)
    spec = AugmentSpec(cutout={"size": 16}, ricap={"beta": 0.3, "keep_off_edges": True})
    out, targets = build_train_augment(spec, mean, std)(raw, labelled(n), generator(5))
    g = generator(5)
    x, t = random_crop(raw.float(), labelled(n), g, padding=4)
    x, t = random_flip(x, t, g)
    x, t = cutout(normalize(x, mean, std), t, g, size=16)
    x, t = ricap(x, t, g, beta=0.3, keep_off_edges=True)
    assert torch.equal(out, x)
    assert_same_targets(targets, t)
    plain, plain_targets = build_train_augment(AugmentSpec(crop=None, flip=False), mean, std)(
        raw, labelled(n), generator(5))
    assert torch.equal(plain, build_eval_transform(mean, std)(raw)) and not plain_targets.maps


def test_normalize_matches_torchvision_to_tensor_and_normalize() -> None:
    mean, std = torch.tensor([0.507, 0.487, 0.441]), torch.tensor([0.267, 0.256, 0.276])
    raw = torch.randint(0, 256, (2, 3, SIZE, SIZE), generator=generator(0), dtype=torch.uint8)
    expected = torch.stack([TF.normalize(TF.to_tensor(TF.to_pil_image(img)), mean.tolist(), std.tolist())
                            for img in raw])
    assert torch.allclose(build_eval_transform(mean, std)(raw), expected, atol=1e-5)
