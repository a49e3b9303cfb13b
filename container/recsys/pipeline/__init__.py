"""Pipeline as code: train → quality gate → (register → create model → deploy) or fail.

- ``definition``: builds the SageMaker Pipeline (imports the SageMaker SDK; never imported by the image).
- ``quality_gate``: the processing-step script, run inside this image (standard library only).
- ``deploy_handler``: the Lambda handler that creates or updates the endpoint (boto3 only).
- ``events``: the EventBridge rule that starts the pipeline when new data lands in S3 (boto3 only).
- ``inspect``: a pipeline definition and an execution's steps as readable tables (for notebooks).
- ``batch``: batch-transform requests (JSON Lines), their output checked line for line, what the transform sent.
"""
