"""What every job needs from SageMaker and the host, whatever it trains or serves: the /opt/ml paths, the resource
config and CPU budget, stop signals, errors and exit codes, logging, leader/worker coordination and checkpoints."""
