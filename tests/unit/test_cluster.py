import threading

import pytest

from helpers.net import free_port
from recsys.platform.cluster import LeaderBeacon, wait_for_leader
from recsys.platform.errors import UserError
from recsys.platform.lifecycle import StopController
from recsys.platform.resources import ResourceConfig


def worker(port, results, stop=None):
    resources = ResourceConfig(current_host="zz-worker", hosts=["localhost", "zz-worker"])
    try:
        wait_for_leader(resources, stop or StopController(), port=port, connect_timeout=10)
        results.append("ok")
    except UserError as exc:
        results.append(str(exc))


@pytest.mark.parametrize("ok, expected", [(True, "ok"), (False, "failed: bad lr")])
def test_workers_wait_for_the_leader_outcome(ok, expected):
    port = free_port()
    results: list[str] = []
    early = threading.Thread(target=worker, args=(port, results))
    early.start()  # connects before the leader listens: retries
    beacon = LeaderBeacon(port=port)
    threading.Event().wait(1.5)
    assert results == []  # still waiting while the leader works
    beacon.finish(ok=ok, reason="bad lr", linger=0.5)
    early.join(10)
    assert len(results) == 1 and expected in results[0]


def test_worker_gives_up_on_an_unreachable_leader():
    resources = ResourceConfig(current_host="b", hosts=["a-host-that-does-not-resolve.invalid", "b"])
    with pytest.raises(UserError, match="could not reach the leader"):
        wait_for_leader(resources, StopController(), port=free_port(), connect_timeout=1)


def test_resource_config_reads_local_mode_names(tmp_path):
    from recsys.platform.paths import SageMakerPaths

    cfg = tmp_path / "input/config"
    cfg.mkdir(parents=True)
    (cfg / "resourceconfig.json").write_text(
        '{"current_host": "algo-2-x1y2z", "hosts": ["algo-2-x1y2z", "algo-1-x1y2z"], "network_interface_name": "eth0"}'
    )
    r = ResourceConfig.read(SageMakerPaths(tmp_path))
    assert r.leader == "algo-1-x1y2z" and not r.is_leader and r.host_rank == 1
