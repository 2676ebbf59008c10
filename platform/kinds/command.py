"""The `command` kind: any command line, run in a slot with the requested CPUs/GPUs.

The command is the job's only worker: Ray reserves `cpus`/`gpus` for it and sets
CUDA_VISIBLE_DEVICES to the devices it got, as training platforms do for a
"run this script on one GPU" job.
"""
from __future__ import annotations

from pydantic import Field

from vidistill.platform.kinds import JobKind, JobResources, register
from vidistill.platform.kinds.config import ConfigError, Schema


class CommandConfig(Schema):
    command: str = Field(description="shell command line to run, e.g. 'python train.py --lr 0.1'")
    cpus: float = Field(1.0, description="CPUs reserved for it (fractions allowed)")
    gpus: float = Field(0.0, description="GPUs reserved for it (0.5 = half a GPU; above 1, whole GPUs)")
    workdir: str | None = Field(None, description="directory to run in (the CLI fills in the directory you submit from)"
    )
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")

    def check(self) -> None:
        if not self.command.strip():
            raise ConfigError("command", "must not be empty")
        if self.cpus <= 0:
            raise ConfigError("cpus", f"must be more than 0 (fractions such as 0.5 are fine), got {self.cpus}")
        if self.gpus < 0:
            raise ConfigError("gpus", f"must be >= 0, got {self.gpus}")
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise ConfigError("gpus", f"fractions are allowed below 1 only (Ray splits one GPU), got {self.gpus}")


COMMAND = register(
    JobKind(
        name="command",
        summary="Run any command line with the requested CPUs and GPUs.",
        config_class=CommandConfig,
        command=lambda config: config.command,
        resources=lambda config: JobResources(1, cpus_per_worker=config.cpus, gpus_per_worker=config.gpus),
        driver_is_worker=True,
        env=lambda config: config.env,
        workdir=lambda config: config.workdir,
        argv_field="command",
    )
)
