"""The `fitserve` command."""

import core  # noqa: F401 - sets OMP_WAIT_POLICY before anything imports torch
