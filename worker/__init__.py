"""The Celery worker, the job runner and its reporter, and the training engine (worker.training)."""

import core  # noqa: F401 - sets OMP_WAIT_POLICY before anything imports torch
