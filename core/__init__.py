"""What the API, the worker and the CLI share.

OpenMP threads that spin while they wait make PyTorch on a shared CPU 10-25x slower (a 2-core
box running an API beside a worker, or two workers): a 784-512-10 step went from 7,500 to
300 samples/s here. Passive waiting costs nothing measurable when the cores are free. It must
be set before torch is first imported; every entry point imports `core` first.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
