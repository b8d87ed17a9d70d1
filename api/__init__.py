"""The HTTP API (FastAPI): routes, auth, schemas, the model cache."""

import core  # noqa: F401 - sets OMP_WAIT_POLICY before anything imports torch
