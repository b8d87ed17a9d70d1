"""Schemathesis against the live OpenAPI schema, once with each tenant's key: no 5xx, every
response matches the schema and status codes its operation declares.

A bounded pass: the `st` CLI (schemathesis 4) with a fixed seed and `--max-examples` per
operation over its phases (coverage, fuzzing, stateful; see PHASES), positive and negative data. The
service is the embedded `fitserve up` with the rate limit off and small job maxima, so the
random specs that parse are refused fast or queue as cheap jobs. Tenant a owns a succeeded
job and an uploaded dataset, and their ids fill the path parameters: tenant a's pass reaches
the real resources (predict on a trained model included), tenant b's asks for another
tenant's (404). FITSERVE_FUZZ_SEED picks another seed, FITSERVE_FUZZ_EXAMPLES another bound.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, Service, _base_env, free_port, wait_for

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance"
EXAMPLES = os.environ.get("FITSERVE_FUZZ_EXAMPLES", "25")
# The coverage phase (schema boundaries, ~1,800 cases here without the submit's, see the config)
# does not depend on the key
# but for the 404s of tenant b, which fuzzing reaches as well: tenant a's pass alone runs it.
PHASES = {"a": "coverage,fuzzing,stateful", "b": "fuzzing,stateful"}
SEED = os.environ.get("FITSERVE_FUZZ_SEED", "20261122")
OPERATIONS = 40  # every route the schema declares; a smaller count means some went untested


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = _base_env(tmp) | {
        "FITSERVE_RATE_LIMIT_PER_SECOND": "0",  # the fuzzer's request rate is not what is tested
        "FITSERVE_MAX_EPOCH_SAMPLES": "2000",
        "FITSERVE_MAX_PARAMETERS": "20000",
        "FITSERVE_MAX_LAYERS": "16",
        "FITSERVE_MAX_JOB_SECONDS": "30",
    }
    service = Service("embedded", f"http://127.0.0.1:{port}", env, tmp)
    service.start("up", "--port", str(port))
    try:
        service.wait_ready()
        service.keys["a"] = (tmp / "api_key").read_text().strip()
        service.keys["b"] = service.fitserve("keys", "create", "--tenant", "other")
        with service.client("a") as client:
            rows = [
                "x1,x2,label",
                *(f"{i % 7},{i % 3},{'yes' if i % 2 else 'no'}" for i in range(40)),
            ]
            up = client.post(
                "/v1/datasets", files={"file": ("fuzz.csv", "\n".join(rows), "text/csv")}
            )
            assert up.status_code == 201, up.text
            spec = {
                "name": "fuzz",
                "dataset": {"name": "iris"},
                "model": {"preset": "mlp"},
                "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
                "fit": {"epochs": 1, "batch_size": 32},
            }
            job = client.post("/v1/jobs", json=spec)
            assert job.status_code == 201, job.text
            assert (
                wait_for(client, job.json()["id"], ("succeeded", "failed"))["status"] == "succeeded"
            )
            job_id = job.json()["id"]
            model = {"name": "fuzzed", "job_id": job_id, "aliases": ["production"]}
            assert client.post("/v1/models", json=model).status_code == 201
        config = tmp / "schemathesis.toml"
        parameters = {
            "path.job_id": job_id,
            "path.ref": job_id,
            "path.dataset_id": up.json()["id"],
            "path.name": "fuzzed",
            "path.alias": "production",
            "path.version": "1",
        }
        config.write_text(
            "[parameters]\n"
            + "".join(f'"{k}" = "{v}"\n' for k, v in parameters.items())
            # The submit body is seven spec families in one oneOf: its schema-boundary cases alone
            # were ~16,900 of the coverage phase's ~18,700 and 230 of its 250 s. Fuzzing and the
            # stateful phase still send it generated specs; tests/test_spec*.py walk its fields.
            + '[[operations]]\ninclude-name = "POST /v1/jobs"\nphases.coverage.enabled = false\n'
            # A sweep's body holds a job spec (`base`) too, and each accepted one submits trials.
            + '[[operations]]\ninclude-name = "POST /v1/sweeps"\nphases.coverage.enabled = false\n'
        )
        service.env["FUZZ_CONFIG"] = str(config)
        yield service
    finally:
        service.stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("tenant", ["a", "b"])
def test_schema_fuzz(fuzz_service: Service, tenant: str, tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [
            str(BIN / "st"),
            "--config-file",
            fuzz_service.env["FUZZ_CONFIG"],
            "run",
            f"{fuzz_service.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {fuzz_service.keys[tenant]}",
            "--checks",
            CHECKS,
            "--max-examples",
            EXAMPLES,
            "--seed",
            SEED,
            "--workers",
            "2",
            "--phases",
            PHASES[tenant],
            "--request-timeout",
            "30",
            "--no-color",
        ],
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=280,
    )
    output = done.stdout + done.stderr
    elapsed = time.monotonic() - started
    print(f"tenant {tenant}: schemathesis ran {elapsed:.0f} s\n{output[-1500:]}")
    tested = re.search(r"Tested:\s+(\d+)", output)
    assert done.returncode == 0, (
        f"schemathesis found failures (exit {done.returncode}):\n{output[-12000:]}"
    )
    assert tested is not None and int(tested.group(1)) == OPERATIONS, output[-3000:]
