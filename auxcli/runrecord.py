"""The reproducibility record of one run: environment, code, data and provenance, as files for `repro/`.

`run_record` is called by the runner when a run finishes; its files go to `runs/<name>/seed-<k>/repro/`
and to the MLflow artifact folder `repro/`, so a bundle can be built from either later:

- `environment.json`: Python, OS, CPU and GPU names, driver/CUDA/cuDNN versions, torch/torchvision and
  every installed distribution, threads, the `runtime:` choices as resolved, the determinism flags and
  the environment variables that change numerics or placement;
- `code.json` (+ `code.patch`): git commit, branch, dirty flag, untracked file names and `git diff HEAD`
  of the working directory; always the installed auxcli version and a sha256 over its source files;
- `data.json`: dataset, split sizes, each archive file's sha256 and size, the DVC md5 when a `dvc.lock`/`.dvc`
  file tracks the data;
- `provenance.json` (+ `spec/`): the spec file as written with its `extends:` bases, the overrides and
  the command line that produced the run, and the transfer source when there is one.

It sits below both `train/` (which writes the record) and `bundle/` (which packs and compares it), and
imports neither torch nor MLflow at import time (the CLI builds `Provenance` before any).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auxcli.gitinfo import git_state
from auxcli.data.identity import archive_folder, dvc_tracked
from auxcli.project import anchored
from auxcli.spec import DataSpec, Spec
from auxcli.tracking import display_uri

RECORD_FORMAT = "auxcli-repro/1"
RECORD_DIR = "repro"
# Variables that change numerics, placement or threading; MLFLOW_TRACKING_URI is kept without a password.
ENV_VARS = ("CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING", "NVIDIA_TF32_OVERRIDE",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED",
            "TORCH_CUDNN_V8_API_DISABLED", "TORCHINDUCTOR_CACHE_DIR", "MLFLOW_TRACKING_URI")
PATCH_LIMIT_BYTES = 8 << 20  # a larger `git diff HEAD` is recorded by its sha256 only


@dataclass(frozen=True)
class Provenance:
    """What produced a run: the spec file and its bases as written, the overrides, the command line.

    Captured by the CLI when the spec is loaded (the file may change during a long run)."""

    spec_file: str | None = None
    sources: tuple[tuple[str, str], ...] = ()  # (path as written or resolved from extends, text)
    overrides: tuple[str, ...] = ()
    argv: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def capture(cls, spec_file: str | Path | None, overrides: Sequence[str] = (),
                argv: Sequence[str] | None = None) -> Provenance:
        sources = tuple((str(p), p.read_text(encoding="utf-8")) for p in spec_sources(Path(spec_file))
                        ) if spec_file else ()
        if argv is None:  # `python -m auxcli` puts the path of __main__.py first: say what the user typed
            argv = ["auxcli" if Path(sys.argv[0]).name in ("__main__.py", "auxcli") else sys.argv[0], *sys.argv[1:]]
        return cls(None if spec_file is None else str(spec_file), sources, tuple(overrides), tuple(argv))


def spec_sources(path: Path) -> list[Path]:
    """The spec file and, depth first, every base its `extends:` names (each once); unreadable ones skipped."""
    from auxcli.errors import SpecError
    from auxcli.safeyaml import read_yaml_file

    seen: list[Path] = []

    def visit(p: Path) -> None:
        if p.resolve() in (s.resolve() for s in seen) or not p.is_file():
            return
        seen.append(p)
        try:
            doc = read_yaml_file(p, "spec file", "a YAML mapping")
        except SpecError:  # the spec loader reports bad YAML; the record keeps the text as it is
            return
        bases = doc.get("extends") if isinstance(doc, dict) else None
        for base in [bases] if isinstance(bases, str) else bases if isinstance(bases, list) else []:
            if isinstance(base, str):
                visit(p.parent / base)

    visit(path)
    return seen


def run_record(spec: Spec, seed: int, *, runtime: dict[str, Any], provenance: Provenance | None = None,
               transfer_tags: dict[str, str] | None = None, split_sizes: dict[str, int] | None = None,
               cwd: Path | None = None) -> dict[str, bytes]:
    """The `repro/` files of a finished run, by relative name. `runtime` holds the resolved runtime
    choices (device, precision, channels_last, compile, deterministic)."""
    provenance = provenance or Provenance()
    files: dict[str, bytes] = {}
    code, patch = code_state(cwd)
    if patch is not None:
        files["code.patch"] = patch
    spec_members = []
    for i, (path, text) in enumerate(provenance.sources):
        member = f"spec/{i}-{Path(path).name}"
        files[member] = text.encode("utf-8")
        spec_members.append({"path": path, "member": member, "sha256": sha256_bytes(text.encode("utf-8"))})
    files["environment.json"] = _json(environment(runtime))
    files["code.json"] = _json(code)
    files["data.json"] = _json(data_record(spec.data, split_sizes))
    files["provenance.json"] = _json({
        "format": RECORD_FORMAT, "spec_name": spec.name, "seed": seed, "spec_file": provenance.spec_file,
        "spec_files": spec_members, "overrides": list(provenance.overrides), "argv": list(provenance.argv),
        "transfer": dict(sorted((transfer_tags or {}).items())) or None,
    })
    return dict(sorted(files.items()))


def runtime_choices(spec: Spec, runtime: Any) -> dict[str, Any]:
    """The `runtime:` choices as resolved (`runtime` is `auxcli.train.runtime.Runtime`)."""
    import torch

    return {"device": str(runtime.device), "precision": "bf16" if runtime.autocast_dtype is not None else "fp32",
            "channels_last": runtime.channels_last, "compile": spec.runtime.compile,
            "compile_mode": runtime.compile_mode or "none",
            "deterministic": spec.runtime.deterministic, "threads": torch.get_num_threads()}


def write_record(folder: Path, files: dict[str, bytes]) -> None:
    """Write the record into `folder` (the run folder's `repro/`), replacing an earlier one."""
    import shutil

    from auxcli.runfolder import atomic_write_bytes

    shutil.rmtree(folder, ignore_errors=True)
    for name, content in files.items():
        atomic_write_bytes(folder / name, lambda f, c=content: f.write(c))


# ---------------------------------------------------------------------------------------------- parts

def environment(runtime: dict[str, Any]) -> dict[str, Any]:
    """Hardware and software the run computed on, and the determinism settings in force."""
    import importlib.metadata as md

    import torch
    import torchvision

    from auxcli.perf.peak import cpu_name

    cuda = torch.cuda.is_available()
    distributions = {}
    for dist in md.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            distributions[name.lower()] = dist.version
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "gpu_driver": gpu_driver() if cuda else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "runtime": dict(sorted(runtime.items())),
        "determinism": {
            "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        },
        "env": {k: display_uri(os.environ[k]) if k == "MLFLOW_TRACKING_URI" else os.environ[k]
                for k in ENV_VARS if k in os.environ},
        "distributions": dict(sorted(distributions.items())),
    }


def gpu_driver() -> str | None:
    import subprocess

    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def code_state(cwd: Path | None = None) -> tuple[dict[str, Any], bytes | None]:
    """The working directory's git state with its diff, and the installed auxcli's version and source hash."""
    import auxcli

    cwd = cwd or Path.cwd()
    git = git_state(cwd)
    record: dict[str, Any] = {"git_commit": git.commit, "git_branch": git.branch, "git_dirty": git.dirty,
                              "untracked": [], "patch_sha256": None, "patch_truncated": False}
    patch = None
    if git.dirty is not None:
        from auxcli.gitinfo import git_diff, untracked_files

        record["untracked"] = untracked_files(cwd)
        diff = git_diff(cwd)
        if diff:
            record["patch_sha256"] = sha256_bytes(diff)
            if len(diff) > PATCH_LIMIT_BYTES:
                record["patch_truncated"] = True
            else:
                patch = diff
    package = Path(auxcli.__file__).parent
    record["package"] = {"version": auxcli.__version__, "source_sha256": source_sha256(package)}
    return record, patch


def source_sha256(package: Path) -> str:
    """sha256 over the package's `*.py` files: each relative path and content, in path order."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def data_record(spec: DataSpec, split_sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Dataset, split sizes and every archive file's sha256 (DVC's md5 too when DVC tracks the folder)."""
    folder = archive_folder(spec)
    files = {}
    if folder.is_dir():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = path.relative_to(folder).as_posix()
            if spec.dataset == "folder" and key.startswith(".auxcli-cache/"):
                continue  # the image folder's tensor cache is derived from the images, not data
            files[key] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    if spec.superclasses is not None and anchored(spec.superclasses).is_file():
        path = anchored(spec.superclasses)
        files[f"superclasses:{spec.superclasses}"] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return {"dataset": spec.dataset, "root": spec.root, "subset": spec.subset, "folder": folder.as_posix(),
            "split_sizes": split_sizes or {}, "files": files, "dvc": dvc_md5(folder)}


def dvc_md5(folder: Path) -> dict[str, str] | None:
    """Where DVC tracks `folder` (a `dvc.lock` output such as the `data` stage's, or a `.dvc` file of
    `dvc add`): {"path": tracked folder relative to the repository, "md5": its md5}; None if untracked."""
    path, md5 = dvc_tracked(folder)
    return {"path": path, "md5": md5} if path and md5 else None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
