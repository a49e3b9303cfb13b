"""The three kinds of failure a job can have, so each is reported the right way.

- ``UserError``: the input or configuration is wrong; the message says what to change. Exit code 2.
- ``TrainingStopped``: SageMaker asked us to stop (SIGTERM). Exit code 143.
- anything else is a bug in our code (or the platform); reported as an internal error. Exit code 1.

Request errors and HTTP statuses belong to serving: ``recsys.serving.errors``.
"""


class UserError(Exception):
    """Something the caller controls is wrong; ``str(err)`` tells them what to change."""

    exit_code = 2


class TrainingStopped(Exception):
    """Raised when the job received SIGTERM (StopTrainingJob, MaxRuntimeInSeconds, spot interruption)."""

    exit_code = 143
