"""Where this host is on the job's network: its address on SageMaker's interface, peers' names resolved with retries
(SageMaker says DNS may not be ready at start; local-mode host names are random)."""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
import time

from recsys.platform.errors import UserError
from recsys.platform.lifecycle import StopController
from recsys.platform.resources import ResourceConfig

log = logging.getLogger(__name__)


def resolve(host: str, stop: StopController | None = None, timeout: float = 300.0) -> str:
    """``host``'s IPv4 address, retrying while DNS is not ready; UserError naming the host after ``timeout``."""
    deadline = time.time() + timeout
    while True:
        if stop is not None:
            stop.check()
        try:
            return socket.gethostbyname(host)
        except OSError as exc:
            if time.time() > deadline:
                raise UserError(f"host name {host} did not resolve within {timeout:.0f} s: {exc}") from None
            time.sleep(1.0)


def interface_address(name: str) -> str | None:
    """The IPv4 address of network interface ``name`` (resourceconfig.json's ``network_interface_name``), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def host_address(resources: ResourceConfig, stop: StopController | None = None) -> str:
    """The address this host's services bind to and advertise: the job's network interface, else its host name."""
    if resources.network_interface:
        address = interface_address(resources.network_interface)
        if address:
            return address
        log.warning(
            "network interface %s has no IPv4 address: resolving %s",
            resources.network_interface,
            resources.current_host,
        )
    return resolve(resources.current_host, stop)
