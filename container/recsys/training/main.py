"""``train``: SageMaker's training entry point (``docker run IMAGE train``; also ``python -m recsys.training``).

hyperparameters.json + channels → a fitted recommender → /opt/ml/model (atomically) + output/data/evaluation.json.
Any failure: a short reason in /opt/ml/output/failure (SageMaker shows its first 1024 characters), the traceback in
the log, a non-zero exit, and no model that looks valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from recsys import __version__
from recsys.artifact import remove_partial, write_model
from recsys.models import Recommender, recommender_class, registry
from recsys.models.base import FitContext, FitResult
from recsys.platform.checkpoints import Checkpointer
from recsys.platform.cluster import HostServices, LeaderBeacon, LeaderLink, interrupt_training
from recsys.platform.errors import TrainingStopped, UserError
from recsys.platform.lifecycle import StopController
from recsys.platform.logs import configure_logging
from recsys.platform.paths import SageMakerPaths, read_json_file
from recsys.platform.resources import ResourceConfig
from recsys.platform.shards import gathered_channels, sharded_channels
from recsys.training.evaluation import Evaluator, PopularityScorer
from recsys.training.hyperparameters import Hyperparameters, parse
from recsys.training.roles import TrainingData, concat, load_training_data

log = logging.getLogger("recsys.training.main")

FAILURE_LIMIT = 1024
REPORT_FILE = "evaluation.json"


def format_metrics(metrics: dict[str, float], **prefix: object) -> str:
    """One metrics line SageMaker metric_definitions can scrape: ``epoch=3; Loss=0.2871; HR=0.6512; NDCG=0.3921;``."""
    parts = [f"{k}={v};" for k, v in prefix.items()]
    parts += [f"{k}={v:.4f};" if isinstance(v, float) else f"{k}={v};" for k, v in metrics.items()]
    return " ".join(parts)


def role_names(role: str, metrics: dict[str, float], k: int) -> dict[str, float]:
    """``{"HR": .., "full_recall@10": ..}`` → ``{"validation:HR@10": .., "validation:full_recall@10": ..}``: names
    that match only their own regex in ``METRIC_DEFINITIONS`` (never ``HR=(.*?);``)."""
    out = {}
    for name, value in metrics.items():
        if name in ("HR", "NDCG"):
            out[f"{role}:{name}@{k}"] = value
        elif name.startswith("full_"):
            out[f"{role}:{name}"] = value
    return out


def validation_reporter(k: int):
    """``report_metrics`` for fits: LotteON's ``Loss=; HR=; NDCG=;`` (validation) plus ``validation:HR@K=`` names."""

    def report(metrics: dict[str, float], **prefix: object) -> None:
        print(format_metrics({**metrics, **role_names("validation", metrics, k)}, **prefix), flush=True)

    return report


def data_fingerprint(data: TrainingData) -> str:
    digest = hashlib.sha256()
    for array in (data.users.ids, data.items.ids, data.all.users, data.all.items):
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _evaluation_notes(data: TrainingData, refit: dict | None, hp) -> tuple[dict, list[str]]:
    """What the metrics mean: which are held-out, and the sentences that say so."""
    overlaps = data.report["overlap_with_train"]
    held_out = {"validation": overlaps["validation"] == 0}
    notes = [f"validation: {data.report['validation_source']}"]
    if data.test is None:
        notes.append("no test channel: only validation metrics are reported (they selected the model)")
    else:
        held_out["test"] = overlaps["test"] == 0
    for role, count in overlaps.items():
        if count:
            notes.append(f"{role}: {count} pair(s) also occur in train: {role} metrics are not held-out")
    if refit is not None:
        shipped = "; test metrics are the refit model's" if data.test is not None else ""
        notes.append(f"after selection the model was refit on all of train{shipped}")
    elif data.validation_carved and not hp.refit:
        notes.append("refit=false: the model was trained without the validation interactions carved from train")
    return held_out, notes


def _checkpointer(
    paths: SageMakerPaths, hp: Hyperparameters, data: TrainingData, resources: ResourceConfig
) -> Checkpointer | None:
    """None without a checkpoint dir. The fingerprint: the algorithm's hyperparameters except those it declares
    weight-neutral, and the data."""
    if not paths.checkpoint_dir.is_dir():
        return None
    neutral = registry.get(hp.algorithm).fingerprint_exclude
    fingerprint = {k: v for k, v in hp.for_algorithm().items() if k not in neutral}
    fingerprint["data"] = data_fingerprint(data)
    checkpoints = Checkpointer(paths.checkpoint_dir, hp.algorithm, fingerprint, resources.current_host)
    checkpoints.latest()  # a checkpoint from another configuration is refused now, before any training
    return checkpoints


def _measure(
    model: Recommender, data: TrainingData, evaluator: Evaluator, result: FitResult, hp: Hyperparameters, phases: dict
) -> tuple[dict[str, dict[str, float]], dict]:
    """(metrics by role, evaluation notes) of the shipped model; prints the selected and test metric lines."""
    validation = dict(result.metrics)
    print(
        format_metrics({**validation, **role_names("validation", validation, hp.top_k)}, final="selected"), flush=True
    )
    metrics: dict = {"validation": validation}
    # Item popularity on the same candidates: what "better than nothing personal" means on this data.
    baseline = {"validation": evaluator.sampled(PopularityScorer(data.train.item_popularity()))}
    if data.test is not None:
        test_started = time.time()
        known = concat(data.known_pairs(), data.test)
        tester = Evaluator(data.all, data.test, hp.top_k, hp.num_eval_negatives, hp.seed, known=known)
        metrics["test"] = tester.evaluate(model, full=True)
        phases["test_seconds"] = round(time.time() - test_started, 3)
        print(format_metrics(role_names("test", metrics["test"], hp.top_k)), flush=True)
        baseline["test"] = tester.sampled(PopularityScorer(data.all.item_popularity()))
    held_out, notes = _evaluation_notes(data, result.refit, hp)
    for note in notes:
        log.info("evaluation: %s", note)
    evaluation = {
        "held_out": held_out,
        "notes": notes,
        "refit": result.refit,
        "baselines": {"item_popularity": baseline},
    }
    return metrics, evaluation


def _write_outputs(
    paths: SageMakerPaths,
    model: Recommender,
    data: TrainingData,
    hp: Hyperparameters,
    metrics: dict,
    evaluation: dict,
    report: dict,
) -> None:
    """The model artifact (atomically), then the evaluation report."""
    write_model(
        paths.model_dir,
        model,
        data.users,
        data.items,
        data.all.csr(),
        data.all.item_popularity(),
        hp,
        metrics,
        extra={
            "evaluation": evaluation,
            "training": {k: report[k] for k in ("fit_seconds", "phases", "info")},
            "data": data.report,
        },
    )
    log.info("model written to %s", paths.model_dir)
    paths.output_data_dir.mkdir(parents=True, exist_ok=True)
    (paths.output_data_dir / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n")


def run(paths: SageMakerPaths, stop: StopController, resources: ResourceConfig, extra: dict | None = None) -> dict:
    """Train and write the model. ``extra``: ``FitContext.extra`` entries (a multi-host job's cluster)."""
    started = time.time()
    hp = parse(read_json_file(paths.hyperparameters_file, "hyperparameters.json", default={}))
    log.info("recsys %s: algorithm=%s hyperparameters=%s", __version__, hp.algorithm, json.dumps(hp.for_algorithm()))
    log.info("resources: %s", json.dumps(resources.summary()))

    data = load_training_data(paths, hp)
    log.info("data: %s", json.dumps(data.report))
    phases = {"load_seconds": round(time.time() - started, 3)}
    stop.check()
    evaluator = Evaluator(
        data.train, data.validation, hp.top_k, hp.num_eval_negatives, hp.seed, known=data.known_pairs()
    )
    checkpoints = _checkpointer(paths, hp, data, resources)
    model = recommender_class(hp.algorithm)(hp, len(data.users), len(data.items))
    ctx = FitContext(
        evaluator=evaluator,
        stop=stop,
        resources=resources,
        checkpoints=checkpoints,
        report_metrics=validation_reporter(hp.top_k),
        refit=hp.refit and data.validation_carved,
        extra=dict(extra or {}),
    )
    fit_started = time.time()
    result = model.fit(data, ctx)
    fit_seconds = time.time() - fit_started
    phases.update(result.info.pop("phases", {}))
    stop.check()
    metrics, evaluation = _measure(model, data, evaluator, result, hp, phases)
    report = {
        "algorithm": hp.algorithm,
        "metrics": metrics,
        **evaluation,
        "history": result.history,
        "info": result.info,
        "data": data.report,
        "phases": phases,
        "fit_seconds": round(fit_seconds, 3),
        "total_seconds": round(time.time() - started, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "resources": resources.summary(),
    }
    _write_outputs(paths, model, data, hp, metrics, evaluation, report)
    return report


def write_failure(paths: SageMakerPaths, reason: str) -> None:
    """The reason first and short; SageMaker keeps the first 1024 characters as FailureReason."""
    text = reason.strip().replace("\n", " ")
    if len(text) > FAILURE_LIMIT:
        text = text[: FAILURE_LIMIT - 3] + "..."
    try:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        paths.failure_file.write_text(text + "\n")
    except OSError as exc:  # the reason still reaches the log
        log.error("could not write %s: %s", paths.failure_file, exc)


def _host_services(paths: SageMakerPaths, resources: ResourceConfig, stop: StopController) -> HostServices | None:
    """The algorithm's multi-host hook: its Recommender's ``host_services(resources, stop)`` classmethod (ALS: a
    Spark standalone cluster; NCF: torch.distributed ranks). None: the leader trains alone and the other hosts wait
    for it. Bad hyperparameters give None here: the leader reports them."""
    try:
        algorithm = parse(read_json_file(paths.hyperparameters_file, "hyperparameters.json", default={})).algorithm
    except UserError:
        return None
    factory = getattr(recommender_class(algorithm), "host_services", None)
    return factory(resources, stop) if factory is not None else None


def lead(paths: SageMakerPaths, stop: StopController, resources: ResourceConfig, beacon: LeaderBeacon) -> None:
    """The leader of a multi-host job: gather the workers (and their shards), start the cluster, train."""
    services = _host_services(paths, resources, stop)
    try:
        extra: dict = {}
        if services is not None:
            services.start_leader()
            # A host that fails or leaves from now on ends the job (a fit waiting on its executors would hang).
            beacon.on_failure = lambda reason: interrupt_training(stop)
        if services is not None or sharded_channels(resources):
            peers = beacon.wait_for_peers(resources.hosts[1:], stop)
            if services is not None:
                extra = services.await_cluster(peers, stop)
        if services is None:
            log.warning("%d hosts: this leader trains alone; the others wait for it", len(resources.hosts))
        run(gathered_channels(paths, resources, beacon.shard_dir), stop, resources, extra)
    finally:
        if services is not None:
            services.close()


def follow(paths: SageMakerPaths, stop: StopController, resources: ResourceConfig) -> None:
    """Any other host: join the leader (sending this host's shards), run the algorithm's services, exit with the
    leader's outcome. A service that dies is reported to the leader, which ends the job."""
    link = LeaderLink(resources).connect(stop)
    services, joined = None, False
    try:
        services = _host_services(paths, resources, stop)
        link.join(services.offer() if services is not None else {}, paths)
        joined = True
        if services is not None:
            services.start_worker(link.leader_address)
        link.wait(stop, services.failure if services is not None else lambda: None)
    except (UserError, OSError, RuntimeError) as exc:
        reason = str(exc)
        if link.conn is not None and link.conn.fileno() != -1:
            # Tell the leader and wait for it to end the job: exiting first would have local mode stop the leader
            # before it wrote this reason.
            with contextlib.suppress(Exception):
                if not joined:
                    link.join()
                link.wait(stop, watch=lambda: reason)
        raise
    finally:
        if services is not None:
            services.close()


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    paths = SageMakerPaths.from_env()
    stop = StopController().install()
    beacon: LeaderBeacon | None = None
    writes_model = True  # only the leader touches /opt/ml/model (local mode shares it between hosts)
    try:
        resources = ResourceConfig.read(paths)
        if len(resources.hosts) == 1:
            run(paths, stop, resources)
        elif not resources.is_leader:
            writes_model = False
            follow(paths, stop, resources)
        else:
            beacon = LeaderBeacon(shard_dir=Path(tempfile.mkdtemp(prefix="recsys-shards-")))
            lead(paths, stop, resources, beacon)
            beacon.finish(ok=True)
        return 0
    except (UserError, TrainingStopped) as exc:
        reason, code = str(exc), exc.exit_code
        log.error("training failed: %s", reason)
    except MemoryError:
        reason, code = f"out of memory: {registry.memory_hint()}", 1
        log.exception("training failed")
    except Exception as exc:  # a bug in our code or the platform: say so, keep the traceback in the log
        reason = f"internal error ({type(exc).__name__}: {exc}); the job log has the traceback"
        code = 1
        log.exception("training failed with an internal error")
    finally:
        if beacon is not None and beacon.shard_dir is not None:
            shutil.rmtree(beacon.shard_dir, ignore_errors=True)
    if beacon is not None and beacon.failure and beacon.on_failure is not None:
        # A host the training depended on failed first: that is the job's reason (not the stop it caused here).
        reason, code = beacon.failure, 1
        log.error("the job failed because %s", reason)
    if writes_model:  # only the leader writes the model and the failure file
        remove_partial(paths.model_dir)
        write_failure(paths, reason)
    if beacon:
        beacon.finish(ok=False, reason=reason)
    return code


if __name__ == "__main__":
    sys.exit(main())
