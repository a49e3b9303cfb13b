"""resourceconfig.json / inputdataconfig.json: which host we are, who else is in the job, how channels arrive.

Read defensively: keys differ between SageMaker, SDK v2/v3 local mode (random ``algo-1-xxxxx`` names) and
heterogeneous clusters. Host names are never hard-coded; the leader is ``sorted(hosts)[0]``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from recsys.platform.paths import SageMakerPaths, read_json_file
from recsys.platform.settings import TrainingSettings


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what a container's cpuset allows), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class ResourceConfig:
    current_host: str = "algo-1"
    hosts: list[str] = field(default_factory=lambda: ["algo-1"])
    network_interface: str | None = None
    instance_type: str | None = None
    input_data_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, paths: SageMakerPaths) -> ResourceConfig:
        resource = read_json_file(paths.resource_config_file, "resourceconfig.json", default={}) or {}
        channels = read_json_file(paths.input_data_config_file, "inputdataconfig.json", default={}) or {}
        current = str(resource.get("current_host") or socket.gethostname() or "algo-1")
        hosts = sorted(str(h) for h in (resource.get("hosts") or [current]))
        if current not in hosts:
            hosts = sorted({*hosts, current})
        env = TrainingSettings.from_env()  # validated here: ``train`` reads this first, inside its error handling
        instance_type = resource.get("current_instance_type") or env.instance_type
        return cls(
            current_host=current,
            hosts=hosts,
            network_interface=resource.get("network_interface_name"),
            instance_type=instance_type,
            input_data_config=channels if isinstance(channels, dict) else {},
        )

    @property
    def leader(self) -> str:
        return self.hosts[0]

    @property
    def is_leader(self) -> bool:
        return self.current_host == self.leader

    @property
    def host_rank(self) -> int:
        return self.hosts.index(self.current_host)

    def summary(self) -> dict[str, Any]:
        return {
            "current_host": self.current_host,
            "hosts": self.hosts,
            "network_interface": self.network_interface,
            "instance_type": self.instance_type,
            "channels": {
                name: {
                    k: v
                    for k, v in (cfg or {}).items()
                    if k in ("ContentType", "TrainingInputMode", "S3DistributionType")
                }
                for name, cfg in self.input_data_config.items()
            },
        }
