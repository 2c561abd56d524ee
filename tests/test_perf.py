"""Runtime choices, static shapes and the torch-only measurements of `auxcli.perf` (numbers printed elsewhere)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from auxcli.data.batches import batch_indices
from auxcli.models.registry import describe_backbones
from auxcli.perf.measure import ModelChoice, Recipe, RuntimeChoice, bench_images, build_model, train_flops_per_image
from auxcli.perf.peak import datasheet_peak, measured_matmul_peak
from auxcli.perf.reference import reference_epoch, reference_loader
from auxcli.augment.pipeline import build_train_augment
from auxcli.tasks import ClassificationTask
from auxcli.train.loop import SplitTensors, evaluate, train_epoch
from auxcli.train.runtime import Runtime, resolve_runtime

TINY = ModelChoice("resnet", 8, None, 4)
TASKS = [ClassificationTask("main", "gt", 100)]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _train_and_evaluate(runtime: Runtime, images: int = 100, batch: int = 32) -> tuple[dict, dict]:
    pixels, labels = bench_images(images)
    model = build_model(TINY, TASKS, runtime)
    forward = runtime.compile(model)
    split = SplitTensors(pixels.to(runtime.device), {"main": labels.to(runtime.device)})
    augment = build_train_augment(Recipe(), torch.tensor([0.5] * 3), torch.tensor([0.25] * 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator(device=runtime.device).manual_seed(0)
    train = train_epoch(forward, TASKS, optimizer, split, torch.randperm(images), batch_size=batch, augment=augment,
                        generator=generator, runtime=runtime, on_batch=lambda n, loss: None)
    model.eval()
    test = evaluate(forward, TASKS, split, batch_size=batch, transform=augment, generator=generator, runtime=runtime,
                    eager=model)
    return train, test


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("channels_last", ["on", "off"])
def test_each_precision_and_memory_format_trains_and_evaluates_on_cpu(precision, channels_last):
    runtime = resolve_runtime(RuntimeChoice(device="cpu", precision=precision, channels_last=channels_last))
    assert runtime.precision == precision and runtime.channels_last == (channels_last == "on")
    train, test = _train_and_evaluate(runtime)
    assert train["count"] == 100 and test["count"] == 100  # eager: no batch is dropped
    assert torch.isfinite(torch.tensor(train["loss"]))


@pytest.mark.slow
def test_compiled_model_trains_with_static_shapes_on_cpu():
    runtime = resolve_runtime(RuntimeChoice(device="cpu", precision="fp32", compile=True, threads=1))
    assert runtime.compile_mode == "default" and runtime.static_shapes
    train, test = _train_and_evaluate(runtime, images=80, batch=32)
    assert train["count"] == 64  # the last partial batch (16 images) is dropped when compiling
    assert test["count"] == 80  # ... but every test image is evaluated (the last batch eagerly)
    assert torch.isfinite(torch.tensor(train["loss"]))


@needs_cuda
@pytest.mark.parametrize("compile_", [False, True])
def test_cuda_auto_runtime_trains_bf16_channels_last(compile_):
    runtime = resolve_runtime(RuntimeChoice(device="cuda", compile=compile_))
    assert (runtime.precision, runtime.memory_format) == ("bf16", "channels_last")
    assert runtime.compile_mode == ("reduce-overhead" if compile_ else None)
    train, test = _train_and_evaluate(runtime, images=80, batch=32)
    assert test["count"] == 80 and torch.isfinite(torch.tensor(train["loss"]))


def test_static_shapes_evaluate_a_last_partial_batch_with_the_eager_model():
    runtime = Runtime(torch.device("cpu"), None, False, compile_mode="default")
    seen: dict[str, list[int]] = {"compiled": [], "eager": []}
    model = build_model(TINY, TASKS, Runtime(torch.device("cpu"), None, False)).eval()

    def recording(name):
        def forward(images):
            seen[name].append(images.shape[0])
            return model(images)
        return forward

    pixels, labels = bench_images(70)
    split = SplitTensors(pixels, {"main": labels})
    sums = evaluate(recording("compiled"), TASKS, split, batch_size=32, runtime=runtime, generator=None,
                    transform=lambda x, t, g: (x.float(), t), eager=recording("eager"))
    assert seen == {"compiled": [32, 32], "eager": [6]} and sums["count"] == 70


def test_drop_last_keeps_only_full_batches_unless_there_is_only_one_batch():
    assert [len(b) for b in batch_indices(torch.arange(70), 32, drop_last=True)] == [32, 32]
    assert [len(b) for b in batch_indices(torch.arange(70), 32)] == [32, 32, 6]
    assert [len(b) for b in batch_indices(torch.arange(20), 32, drop_last=True)] == [20]


def test_auto_choices_resolve_per_device_and_backbone():
    cpu = RuntimeChoice(device="cpu")
    assert resolve_runtime(cpu, backbone="resnet").channels_last
    assert resolve_runtime(cpu, backbone="pyramidnet").channels_last
    assert not resolve_runtime(cpu, backbone="linear").channels_last  # no convolutions
    assert resolve_runtime(cpu).compile_mode is None  # compile: false
    assert resolve_runtime(RuntimeChoice(device="cpu", compile=True, compile_mode="max-autotune")).compile_mode \
        == "max-autotune"
    params = resolve_runtime(RuntimeChoice(device="cpu", compile=True)).params()
    assert params == {"runtime.resolved.device": "cpu", "runtime.resolved.precision": "fp32",
                      "runtime.resolved.memory_format": "channels_last", "runtime.resolved.compile_mode": "default"}


def test_training_flops_are_three_forward_passes_of_the_models_table():
    gflops = describe_backbones(backbone="resnet", depth=110)[0]["gflops"]
    assert train_flops_per_image(ModelChoice("resnet", 110)) == pytest.approx(3 * gflops * 1e9)


def test_gpu_peaks_come_from_the_datasheet_table_by_device_name():
    assert datasheet_peak("NVIDIA H100 80GB HBM3").flops == 989e12
    assert datasheet_peak("NVIDIA H100 PCIe").flops == 756e12
    assert datasheet_peak("NVIDIA A100-SXM4-80GB").flops == 312e12
    assert datasheet_peak("NVIDIA L40S").flops == 362e12
    assert datasheet_peak("Some Future GPU") is None  # measured instead


def test_cpu_peak_is_a_measured_matmul_rate():
    peak = measured_matmul_peak(torch.device("cpu"), torch.float32, n=256, repeats=2)
    assert peak.flops > 1e8 and peak.source.startswith("measured: float32 matmul n=256")


def test_reference_loop_trains_the_same_model_from_pil_images():
    pixels, labels = bench_images(64)
    model = build_model(TINY, TASKS, Runtime(torch.device("cpu"), None, False))
    before = [p.detach().clone() for p in model.parameters()]
    loader = reference_loader(pixels, labels, batch_size=32, workers=0, mean=[0.5] * 3, std=[0.25] * 3)
    first = next(iter(loader))[0]
    assert first.shape == (32, 3, 32, 32) and first.dtype == torch.float32
    accuracy = reference_epoch(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, torch.device("cpu"))
    assert 0.0 <= accuracy <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


BLOCK_NON_TORCH = """
import importlib.machinery, runpy, sys
class Missing:  # importing a blocked module fails as if it were not installed
    def create_module(self, spec):
        raise ImportError('blocked for this test: ' + spec.name)
    def exec_module(self, module):
        pass
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('pydantic', 'mlflow', 'dvc', 'typer', 'tabulate', 'ruamel'):
            return importlib.machinery.ModuleSpec(name, Missing())
sys.meta_path.insert(0, Block())
sys.argv = ['auxcli.perf'] + sys.argv[1:]
runpy.run_module('auxcli.perf', run_name='__main__')
"""


def test_perf_bench_runs_without_pydantic_mlflow_or_dvc():
    """benchmarks/gpu.sh's path: a GPU machine may have torch but none of auxcli's other dependencies."""
    result = subprocess.run([sys.executable, "-c", BLOCK_NON_TORCH, "bench", "--depth", "8", "--base-width", "4",
                             "--batch-size", "32", "--steps", "2", "--repeats", "1", "--workers", "0",
                             "--threads", "1", "--device", "cpu", "--format", "json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["backbone"] == "resnet" and row["depth"] == 8 and row["batch_size"] == 32
    assert row["end_to_end_images_per_second"] > 0 and row["reference_images_per_second"] > 0


@pytest.mark.slow
def test_compiled_run_finishes_and_records_the_resolved_runtime_in_mlflow(workdir, tiny_spec):
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from auxcli.cli import app

    # batch 32 and the model of the test above: inductor's cache makes this second compilation cheap
    spec = tiny_spec("compiled", "runtime: {threads: 1, compile: true}\n")
    spec.write_text(spec.read_text().replace("runtime: {threads: 1}\n", "").replace(
        "batch_size: 64, milestones: [1], eval_batch_size: 200", "batch_size: 32, milestones: [1], eval_batch_size: 32"
    ).replace("epochs: 2", "epochs: 1").replace("milestones: [1]", "milestones: []"))
    result = CliRunner().invoke(app, ["run", str(spec)])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("auxcli").experiment_id],
                                filter_string="tags.`auxcli.seed` = '0'")  # the seed's run, not its spec's parent
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["runtime.compile_mode"] == "auto" and params["runtime.precision"] == "auto"  # what was asked
    assert (params["runtime.resolved.compile_mode"], params["runtime.resolved.precision"],
            params["runtime.resolved.memory_format"], params["runtime.resolved.device"]) == (
        "default", "fp32", "channels_last", "cpu")  # what ran
    history = client.get_metric_history(run.info.run_id, "test_acc")
    assert len(history) == 1 and 0.0 <= history[0].value <= 1.0


def test_parity_verdict_compares_the_mean_difference_with_seed_noise():
    from auxcli.perf.parity import ParityRun, verdict

    def runs(fp32, bf16):
        return [ParityRun("fp32", s, a, 1.0) for s, a in enumerate(fp32)] + \
            [ParityRun("bf16", s, a, 1.0) for s, a in enumerate(bf16)]

    assert "the same within seed noise" in verdict(runs([0.60, 0.64], [0.61, 0.63]))
    assert "DIFFERENT beyond seed noise" in verdict(runs([0.60, 0.61], [0.50, 0.51]))
    assert "tolerance 1.00" in verdict(runs([0.60, 0.60], [0.60, 0.60]))  # at least one point


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_device_is_a_clear_error_with_exit_code_2(workdir):
    from typer.testing import CliRunner

    from auxcli.cli import app

    result = CliRunner().invoke(app, ["bench", "--depth", "8", "--device", "cuda"])
    assert result.exit_code == 2
    assert "runtime.device: 'cuda' was asked for, but torch sees no CUDA device here" in result.stderr
    assert "allowed: auto, cpu." in result.stderr


def test_cpu_sharing_gives_each_bench_process_its_share_of_the_cores():
    import torch

    from auxcli.perf.__main__ import cpu_share

    share = str(max(1, torch.get_num_threads() // 2))
    assert cpu_share(["--device", "cpu", "--steps", "2"], 2) == ["--threads", share]
    assert cpu_share(["--device", "cpu", "--threads", "3"], 2) == []  # asked for: left alone
    assert cpu_share(["--device", "cuda"], 2) == []  # a GPU's processes keep torch's default


@pytest.mark.slow
def test_perf_sharing_sums_the_rates_of_concurrent_processes():
    result = subprocess.run(
        [sys.executable, "-m", "auxcli.perf", "sharing", "--processes", "1", "2", "--runs", "24", "--",
         "--backbone", "resnet", "--depth", "8", "--base-width", "4", "--batch-size", "16", "--steps", "1",
         "--repeats", "1", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "process(es)" in line]
    assert [line.split()[0] for line in lines] == ["1", "2"]
    each = re.search(r"each ([\d,]+), ([\d,]+);", lines[1])  # two processes, two rates, and their sum
    total = float(re.search(r"([\d,]+) images/s in total", lines[1]).group(1).replace(",", ""))
    rates = [float(g.replace(",", "")) for g in each.groups()]
    assert abs(total - sum(rates)) <= 2 and all(r > 0 for r in rates)
    assert re.search(r"24 runs of 15,000,000 images: [\d.]+ h$", lines[1])


@pytest.mark.parametrize(("argv", "says"), [
    (["bench", "--depth", "7", "--device", "cpu"], "ResNet depth must be 6n+2"),
    (["bench", "--steps", "0"], "argument --steps: 0 is below 1"),
    (["bench", "--workers", "x"], "argument --workers: 'x' is not a whole number"),
    (["parity", "--device", "cuda:7"], "runtime.device: 'cuda:7' was asked for"),
    (["sharing", "--processes", "0"], "argument --processes: 0 is below 1"),
])
def test_perf_bad_input_is_one_line_and_exit_code_2(capsys, argv, says):
    from auxcli.perf.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and says in err and "Traceback" not in err
