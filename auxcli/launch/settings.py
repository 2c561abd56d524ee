"""Slurm resources: a launcher file (`--launcher slurm.yaml`) and `--slurm key=value` flags.

The keys are those of Hydra's submitit launcher (hydra-submitit-launcher's `SlurmQueueConf`), so a
Hydra user's `hydra/launcher` block can be copied as is; none of it enters the spec or its identity.
`additional_parameters` passes any other sbatch option (`{exclusive: true, mail_type: END}`).
Two keys are auxcli's own: `runs_dir_shared` (say the runs folder is shared although it looks
node-local, see `auxcli.launch.checks`) and `python` (the interpreter on the compute nodes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from auxcli.errors import LaunchError


class SlurmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    submitit_folder: str | None = None  # job scripts and logs; default <runs_dir>/.slurm/
    timeout_min: int = Field(60, ge=1)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    comment: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    gres: str | None = None
    nodes: int = Field(1, ge=1)
    tasks_per_node: int = Field(1, ge=1)
    cpus_per_task: int | None = Field(None, ge=1)
    gpus_per_node: int | None = Field(None, ge=0)
    cpus_per_gpu: int | None = Field(None, ge=1)
    gpus_per_task: int | None = Field(None, ge=0)
    mem_gb: int | None = Field(None, ge=1)
    mem_per_gpu: str | None = None
    mem_per_cpu: str | None = None
    signal_delay_s: int = Field(90, ge=0)  # submitit's preemption signal this long before the time limit
    max_num_timeout: int = Field(3, ge=0)  # requeues after preemption or the time limit, then the job fails
    setup: list[str] = Field(default_factory=list)  # shell lines before the job (module load ...)
    srun_args: list[str] = Field(default_factory=list)
    additional_parameters: dict[str, Any] = Field(default_factory=dict)
    runs_dir_shared: bool = False
    python: str | None = None


KEYS = tuple(SlurmSettings.model_fields)


def load_settings(launcher: Path | None, flags: list[str]) -> SlurmSettings:
    """The launcher file's mapping, then `--slurm key=value` flags (values parsed as YAML scalars)."""
    from auxcli.safeyaml import parse_yaml, plain, read_text_file

    data: dict[str, Any] = {}
    source = "--slurm"
    if launcher is not None:
        text = read_text_file(launcher, "launcher file", "a YAML mapping of Slurm launcher keys")
        loaded = plain(parse_yaml(text, str(launcher), "a YAML mapping of Slurm launcher keys"))
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise LaunchError(f"{launcher}: a launcher file is a mapping of Slurm launcher keys "
                              f"({', '.join(KEYS)}), not a {type(loaded).__name__}.")
        data.update(loaded)
        _check_keys(data, str(launcher))
    for flag in flags:
        key, sep, value = flag.partition("=")
        if not sep or not key:
            raise LaunchError(f"--slurm {flag!r}: write key=value, e.g. --slurm partition=gpu; keys: "
                              f"{', '.join(KEYS)}.")
        parsed = plain(parse_yaml(value, f"--slurm {key}", "a YAML scalar", value=True)) if value else None
        if key.startswith("additional_parameters."):
            data.setdefault("additional_parameters", {})[key.split(".", 1)[1]] = parsed
        else:
            data[key] = parsed
        _check_keys(data, source)
    try:
        return SlurmSettings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = str(launcher) if launcher is not None and first["loc"][0] not in _flag_keys(flags) else source
        field = ".".join(str(p) for p in first["loc"])
        raise LaunchError(f"{where} {field}: {first['msg']} (got {first.get('input')!r}).") from None


def _flag_keys(flags: list[str]) -> set[str]:
    return {flag.partition("=")[0].split(".")[0] for flag in flags}


def _check_keys(data: dict[str, Any], source: str) -> None:
    unknown = [key for key in data if key not in KEYS]
    if unknown:
        raise LaunchError(f"{source} {unknown[0]}: not a Slurm launcher key; allowed: {', '.join(KEYS)} "
                          "(hydra-submitit-launcher's names; other sbatch options go under "
                          "additional_parameters).")
