"""Channels sharded per host (``S3DistributionType=ShardedByS3Key``): which they are, and the leader's view of them
once every host's shard has arrived (``cluster.LeaderBeacon`` receives the workers' files)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from recsys.platform.paths import SageMakerPaths
from recsys.platform.resources import ResourceConfig

log = logging.getLogger(__name__)

SHARDED = "ShardedByS3Key"


def sharded_channels(resources: ResourceConfig) -> list[str]:
    """Channels each host gets only a part of (``S3DistributionType=ShardedByS3Key``)."""
    return sorted(
        name for name, cfg in resources.input_data_config.items() if (cfg or {}).get("S3DistributionType") == SHARDED
    )


def gathered_channels(paths: SageMakerPaths, resources: ResourceConfig, view: Path) -> SageMakerPaths:
    """Paths whose sharded channels hold every host's shard, in host order: ``<view>/<channel>/<host>/...`` (the
    workers' files as ``LeaderBeacon`` received them into ``view``, the leader's own linked there); every other
    channel links to the original. Without a sharded channel: ``paths`` itself."""
    sharded = sharded_channels(resources)
    if not sharded:
        return paths
    for channel in (p.name for p in paths.data_dir.iterdir()) if paths.data_dir.is_dir() else []:
        if channel not in sharded:
            (view / channel).symlink_to(paths.channel(channel).resolve())
    for channel in sharded:
        own = paths.channel(channel)
        # Files, not directories, are linked: Path.rglob does not descend into linked directories.
        for path in sorted(p for p in own.rglob("*") if p.is_file()) if own.is_dir() else []:
            target = view / channel / resources.current_host / path.relative_to(own)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    log.info("sharded channel(s) %s gathered from %d hosts", ", ".join(sharded), len(resources.hosts))
    return GatheredPaths(paths.base, paths.checkpoint_override, view)


@dataclass(frozen=True)
class GatheredPaths(SageMakerPaths):
    """``SageMakerPaths`` reading channels from a gathered view (``gathered_channels``)."""

    data_view: Path | None = None

    @property
    def data_dir(self) -> Path:
        return self.data_view if self.data_view is not None else super().data_dir
