"""SageMaker Python SDK v3 local mode against the recsys image — run in the SDK v3 venv (.venv-sdk3), not the project's.

    .venv-sdk3/bin/python tests/container/sdk_v3_driver.py --image recsys-test:cpu --work /tmp/v3 \
        --train DIR [--test DIR] --algorithm ncf --port 8123 --result /tmp/v3/result.json

1. train: ``ModelTrainer(training_mode=Mode.LOCAL_CONTAINER, ...)`` (the container gets no command: the image's
   ``CMD ["train"]`` runs);
2. host: ``sagemaker.core.local.LocalSession`` create_model → create_endpoint_config → create_endpoint →
   invoke_endpoint → delete_endpoint (v3's ModelBuilder cannot host a custom server offline);
3. batch: the same session's create_transform_job (JSON Lines, SplitType=Line, MultiRecord, AssembleWith=Line).

Writes what it saw to ``--result`` (JSON) for the pytest test (tests/container/test_container_sdk_v3.py) to assert on.
No AWS account: local image, local files; telemetry is turned off by the caller (SAGEMAKER_USER_CONFIG_OVERRIDE).
"""

from __future__ import annotations

import argparse
import json
import tarfile
import time
from pathlib import Path


def train(args, hyperparameters: dict) -> tuple[Path, float]:
    from sagemaker.train.configs import Compute, InputData
    from sagemaker.train.model_trainer import Mode, ModelTrainer

    root = args.work / "trainer"
    root.mkdir(parents=True)  # fresh: ModelTrainer does not clean model/ between runs
    channels = [InputData(channel_name="train", data_source=str(args.train))]
    if args.test:
        channels.append(InputData(channel_name="test", data_source=str(args.test)))
    trainer = ModelTrainer(
        training_mode=Mode.LOCAL_CONTAINER,
        training_image=args.image,
        compute=Compute(instance_type="local_cpu", instance_count=1),
        hyperparameters=hyperparameters,
        input_data_config=channels,
        local_container_root=str(root),
        base_job_name=f"recsys-v3-{args.algorithm}",
    )
    started = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - started
    model_tar = root / "compressed_artifacts" / "model.tar.gz"
    if not model_tar.is_file():
        found = sorted(str(p) for p in root.rglob("*.tar.gz"))
        raise SystemExit(f"no model.tar.gz under {root}/compressed_artifacts; found {found}")
    return model_tar, seconds


def known_user(model_tar: Path, work: Path) -> str:
    import numpy as np

    target = work / "model"
    with tarfile.open(model_tar) as tar:
        tar.extractall(target, filter="data")
    with np.load(target / "ids.npz", allow_pickle=False) as ids:
        return str(ids["users"][0])


def host_and_batch(args, model_tar: Path, user: str) -> dict:
    from sagemaker.core.local import LocalSession

    session = LocalSession()
    session.config = {
        "local": {"local_code": True, "serving_port": args.port, "container_root": str(args.work / "containers")}
    }
    (args.work / "containers").mkdir()
    client, runtime = session.sagemaker_client, session.sagemaker_runtime_client
    name = f"recsys-v3-{args.algorithm}"
    client.create_model(
        ModelName=name, PrimaryContainer={"Image": args.image, "ModelDataUrl": f"file://{model_tar}", "Environment": {}}
    )
    client.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "local"}
        ],
    )
    out: dict = {}
    started = time.monotonic()
    client.create_endpoint(EndpointName=name, EndpointConfigName=name)
    try:
        out["endpoint_ready_s"] = time.monotonic() - started
        response = runtime.invoke_endpoint(
            Body=json.dumps({"users": [user], "k": 5}),
            EndpointName=name,
            ContentType="application/json",
            Accept="application/json",
        )
        out["content_type"] = response.get("ContentType")
        out["prediction"] = json.loads(response["Body"].read())
    finally:
        client.delete_endpoint(EndpointName=name)

    source, output = args.work / "batch-in", args.work / "batch-out"
    source.mkdir()
    requests = [
        {"users": [user], "k": 3},
        {"users": [user, "a-customer-never-seen"], "k": 2},
        {"users": [user], "k": 4},
    ]
    (source / "requests.jsonl").write_text("\n".join(json.dumps(r) for r in requests) + "\n")
    client.create_transform_job(
        TransformJobName=f"{name}-batch",  # a name given explicitly: otherwise the SDK asks the real DescribeModel
        ModelName=name,
        BatchStrategy="MultiRecord",
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"file://{source}"}},
            "ContentType": "application/jsonlines",
            "SplitType": "Line",
        },
        TransformOutput={"S3OutputPath": f"file://{output}", "Accept": "application/jsonlines", "AssembleWith": "Line"},
        TransformResources={"InstanceType": "local", "InstanceCount": 1},
    )
    out["batch_requests"] = requests
    out["batch_output"] = (output / "requests.jsonl.out").read_text()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path)
    parser.add_argument("--algorithm", choices=["ncf", "als"], default="ncf")
    parser.add_argument("--hyperparameters", default="{}", help="JSON object merged over the defaults")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    import sagemaker.core

    hyperparameters = {"algorithm": args.algorithm, "preset": "online_retail", **json.loads(args.hyperparameters)}
    result: dict = {"sdk": getattr(sagemaker.core, "__version__", "?"), "hyperparameters": hyperparameters}
    model_tar, result["train_s"] = train(args, hyperparameters)
    result["model_tar"] = str(model_tar)
    result["user"] = known_user(model_tar, args.work)
    result.update(host_and_batch(args, model_tar, result["user"]))
    args.result.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
