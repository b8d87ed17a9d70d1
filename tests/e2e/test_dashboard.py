"""The web dashboard in a real browser: Playwright driving Debian's Chromium against a real
`fitserve up` (the embedded backend: the page reads the same API on both, whose own tests run
on PostgreSQL too). Sign in; watch a training job's curves gain every epoch's point, read from
the plot itself; cancel a running job; draw a digit and get its prediction; compare jobs; user
strings render as text and run nothing. The pictures land in tests/artifacts/dashboard/
(FITSERVE_TEST_ARTIFACTS moves it); docs/images/ keeps four of them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.browser import Dashboard, api_series, launch_chromium, new_dashboard, submit
from tests.e2e.conftest import Service, wait_for
from tests.e2e.http import example

pytestmark = pytest.mark.parametrize("service", ["embedded"], indirect=True)
FINISHED = ("succeeded", "failed", "cancelled")
EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_chromium()


@pytest.fixture(scope="module")
def key(service: Service) -> str:
    """A tenant of the dashboard tests' own: its lists hold only their jobs."""
    return service.fitserve("keys", "create", "--tenant", f"dashboard-{secrets.token_hex(3)}")


@pytest.fixture
def client(service: Service, key: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=60) as c:
        yield c


@pytest.fixture
def dash(browser: Any, service: Service, key: str) -> Iterator[Dashboard]:
    board = new_dashboard(browser, service.url, key)
    yield board
    board.assert_clean()
    board.page.context.close()


@pytest.fixture(scope="module")
def digits_job(service: Service, key: str) -> str:
    """The lecture's Keras MNIST example on digits, trained."""
    job_id = submit(service.url, key, example("digits_mlp"))
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}) as c:
        assert wait_for(c, job_id, FINISHED)["status"] == "succeeded"
    return job_id


def test_sign_in_keeps_the_key_in_the_tabs_session_storage_only(
    dash: Dashboard, browser: Any, service: Service, key: str
) -> None:
    page = dash.page
    storage = page.evaluate("() => [sessionStorage.getItem('fitserve.key'), localStorage.length]")
    assert storage == [key, 0] and page.evaluate("document.cookie") == ""
    assert key not in page.url
    page.reload()
    page.wait_for_selector("table.jobs")  # a reload keeps it: the same tab
    page.click("#signout")
    page.wait_for_selector("form.signin")
    assert page.evaluate("() => sessionStorage.length") == 0
    page.fill("#key", "fs_not_a_key")
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("text=That key is not valid.")
    other = browser.new_context()  # another tab's session: signed out
    fresh = other.new_page()
    fresh.goto(f"{service.url}/#/datasets")
    fresh.wait_for_selector("form.signin")
    other.close()


def test_a_training_jobs_curves_gain_every_epochs_point_live(
    dash: Dashboard, client: httpx.Client, service: Service, key: str
) -> None:
    epochs = 6
    spec = example("digits_mlp") | {"name": "digits-mlp-live"}
    spec["fit"] |= {"epochs": epochs, "batch_size": 4}  # about a second an epoch
    job_id = submit(service.url, key, spec)
    dash.open(f"/jobs/{job_id}")
    reads: list[tuple[str, list, list]] = []
    shot = False
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        x, y = dash.series("accuracy", "val_accuracy")
        job = client.get(
            f"/v1/jobs/{job_id}"
        ).json()  # read after the chart: it was this or earlier
        if not reads or reads[-1][1] != x:
            reads.append((job["status"], x, y))
        if job["status"] == "running" and len(x) >= 3 and not shot:
            dash.page.wait_for_selector("text=/epoch \\d of 6/")
            shot = bool(dash.screenshot("job-page.png"))
        if job["status"] in FINISHED:
            break
        time.sleep(0.1)
    assert job["status"] == "succeeded", job["reason"]
    want_x, want_y = api_series(client, job_id, "val_accuracy", "epoch")
    assert want_x == list(range(1, epochs + 1))
    assert dash.wait_series("accuracy", "val_accuracy", epochs) == (want_x, want_y)
    live = [x for status, x, _ in reads if status == "running" and 0 < len(x) < epochs]
    assert len({len(x) for x in live}) >= 2, f"the chart did not grow while it trained: {reads}"
    for _, x, y in reads:  # every read: the first epochs, in order, none repeated
        assert (x, y) == (want_x[: len(x)], want_y[: len(y)])
    for name in ("loss", "val_loss", "step_loss"):  # one chart, against the step
        plotted = dash.wait_series("loss", name, len(api_series(client, job_id, name, "step")[0]))
        assert plotted == api_series(client, job_id, name, "step"), name
    assert shot, "the job ended before the page showed three epochs"
    dash.page.wait_for_selector(".job-head .badge-succeeded")


def test_a_dropped_stream_resumes_after_its_last_event(
    dash: Dashboard, digits_job: str, client: httpx.Client
) -> None:
    """The first connection ends halfway through the replay, as a dropped one would: the page
    connects again with Last-Event-ID, and every point is plotted once, in order."""
    cut: list[str] = []

    def drop_halfway(route: Any) -> None:
        if cut:
            route.continue_()
            return
        answer = route.fetch()
        frames = answer.text().split("\n\n")
        cut.append("\n\n".join(frames[: len(frames) // 2]) + "\n\n")
        route.fulfill(response=answer, body=cut[0])

    dash.page.route("**/v1/jobs/*/events", drop_halfway)

    def resumed(request: Any) -> bool:
        return "/events" in request.url and "last-event-id" in request.headers

    with dash.page.expect_request(resumed, timeout=20_000) as again:
        dash.open(f"/jobs/{digits_job}")
    last = [line for line in cut[0].splitlines() if line.startswith("id: ")][-1]
    assert again.value.headers["last-event-id"] == last.removeprefix("id: ")
    for name, chart, x in (
        ("step_loss", "loss", "step"),
        ("val_loss", "loss", "step"),
        ("val_accuracy", "accuracy", "epoch"),
    ):
        want = api_series(client, digits_job, name, x)
        assert dash.wait_series(chart, name, len(want[0])) == want, name
    dash.page.wait_for_selector(".job-head .badge-succeeded")


def test_cancel_a_running_job_from_its_page(
    dash: Dashboard, client: httpx.Client, service: Service, key: str
) -> None:
    spec = example("digits_mlp") | {"name": "digits-long"}
    spec["fit"] |= {"epochs": 1000}
    job_id = submit(service.url, key, spec)
    wait_for(client, job_id, ("running",), timeout=60)
    dash.open(f"/jobs/{job_id}")
    dash.page.click(".job-head button.danger")
    dash.page.click("dialog.confirm button[value=yes]")
    done = wait_for(client, job_id, FINISHED, timeout=60)
    assert done["status"] == "cancelled" and done["reason"].startswith("cancelled by request")
    dash.page.wait_for_selector(".job-head .badge-cancelled")
    dash.page.wait_for_selector(f"text={done['reason']}")
    assert dash.page.locator(".job-head button.danger").is_hidden()


def test_draw_a_digit_and_get_its_class_probabilities(
    dash: Dashboard, digits_job: str, client: httpx.Client
) -> None:
    dash.open(f"/jobs/{digits_job}/try")
    dash.page.wait_for_selector("canvas.sketch")
    with dash.page.expect_response(lambda r: r.url.endswith("/predict")) as answered:
        dash.draw_zero()
    sent = answered.value.request.post_data_json
    answer = answered.value.json()
    pixels = sent["instances"][0]
    assert len(pixels) == 64 and min(pixels) >= 0 and max(pixels) <= 16 and max(pixels) > 8
    dash.page.wait_for_selector(".bars .bar-row >> nth=9")
    rows = dash.page.locator(".bar-row")
    labels = [rows.nth(i).locator(".bar-label").inner_text() for i in range(rows.count())]
    shown = [rows.nth(i).locator(".bar-value").inner_text() for i in range(rows.count())]
    assert labels == [str(i) for i in range(10)]
    assert shown == [f"{p * 100:.1f}%" for p in answer["probabilities"][0]]
    assert dash.page.inner_text(".verdict strong") == answer["predictions"][0] == "0"
    dash.screenshot("try-model.png")
    # The same drawing, sent again by hand, gets the same answer.
    again = client.post(f"/v1/models/{digits_job}/predict", json={"instances": [pixels]})
    assert again.json()["probabilities"] == answer["probabilities"]


def test_compare_overlays_a_metric_of_several_jobs(
    dash: Dashboard, digits_job: str, client: httpx.Client, service: Service, key: str
) -> None:
    spec = example("digits_mlp") | {"name": "digits-mlp-sgd"}
    spec["compile"] |= {"optimizer": {"type": "sgd", "learning_rate": 0.05, "momentum": 0.9}}
    other = submit(service.url, key, spec)
    assert wait_for(client, other, FINISHED)["status"] == "succeeded"
    dash.open(f"/compare?ids={digits_job},{other}&metric=val_accuracy")
    for job_id in (digits_job, other):
        name = client.get(f"/v1/jobs/{job_id}").json()["name"]
        plotted = dash.wait_series("compare", f"{name} · {job_id[4:10]}", 5)
        assert plotted == api_series(client, job_id, "val_accuracy", "epoch")
    dash.page.select_option("select[name=metric]", "val_loss")
    dash.wait_series("compare", f"digits-mlp-sgd · {other[4:10]}", 5)
    dash.page.select_option("select[name=metric]", "val_accuracy")
    dash.wait_series("compare", f"digits-mlp-sgd · {other[4:10]}", 5)
    assert dash.page.locator(".compare .table tbody tr").count() == 2
    dash.screenshot("compare.png")


def test_user_strings_render_as_text_and_run_nothing(
    dash: Dashboard, client: httpx.Client, service: Service, key: str
) -> None:
    # A job's name cannot hold markup: the API refuses it.
    refused = client.post("/v1/jobs", json=example("iris_mlp") | {"name": EVIL})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "name"]
    # A dataset's name, a file's name (echoed by a refusal) and a class name can.
    rows = ["a,b,kind"] + [f"{i % 7},{i % 5},{EVIL if i % 7 > 3 else 'plain'}" for i in range(80)]
    dash.open("/datasets")
    page = dash.page
    page.set_input_files(
        "input[name=file]",
        files=[{"name": f"{EVIL}.txt", "mimeType": "text/plain", "buffer": b"x"}],
    )
    page.click("form.upload button[type=submit]")
    page.wait_for_selector(f"pre.error >> text=got '{EVIL}.txt'")
    csv = {"name": "table.csv", "mimeType": "text/csv", "buffer": "\n".join(rows).encode()}
    page.set_input_files("input[name=file]", files=[csv])
    page.fill("input[name=name]", EVIL)
    page.click("form.upload button[type=submit]")
    page.wait_for_selector(f"text=Uploaded: {EVIL} (80 samples)")
    cell = page.locator(".dataset-name", has_text=EVIL).first
    assert cell.inner_text() == EVIL
    dataset_id = next(
        d["id"] for d in client.get("/v1/datasets").json()["data"] if d["name"] == EVIL
    )
    spec = {
        "name": "markup-classes",
        "dataset": {"id": dataset_id},
        "model": {"preset": {"name": "mlp", "hidden_units": [16]}},
        "compile": {
            "optimizer": {"type": "adam", "learning_rate": 0.05},
            "loss": "sparse_categorical_crossentropy",
        },
        "fit": {"epochs": 3},
    }
    job_id = submit(service.url, key, spec)
    assert wait_for(client, job_id, FINISHED)["status"] == "succeeded"
    dash.open(f"/jobs/{job_id}/model")
    assert page.locator(".chip", has_text=EVIL).inner_text() == EVIL
    assert page.locator(".facts dd", has_text=EVIL).inner_text() == EVIL  # the dataset's name
    dash.open(f"/jobs/{job_id}/try")
    page.fill("input[name=f0]", "6")
    page.click("form.feature-form button[type=submit]")
    assert page.locator(".bar-label", has_text=EVIL).inner_text() == EVIL
    dash.screenshot("user-strings.png")
    dash.open("/jobs")
    cell = page.wait_for_selector(f"tr[data-job-id='{job_id}'] .dataset-cell")
    assert cell.inner_text() == EVIL  # the upload's name, in the list of jobs
    assert page.locator("img[src='x']").count() == 0
    # Deleted from the page; the question names it, as text too.
    dash.open("/datasets")
    page.click(f"tr[data-dataset-id='{dataset_id}'] button.danger")
    assert page.inner_text("dialog.confirm p").startswith(f"Delete the dataset “{EVIL}”?")
    page.click("dialog.confirm button[value=yes]")
    page.wait_for_selector(f"tr[data-dataset-id='{dataset_id}']", state="detached")
    assert client.get(f"/v1/datasets/{dataset_id}").status_code == 404


def test_generative_models_show_what_they_make_as_images(
    dash: Dashboard, client: httpx.Client, service: Service, key: str
) -> None:
    vae = submit(service.url, key, example("digits_vae") | {"fit": {"epochs": 3}})
    cgan = submit(service.url, key, example("digits_cgan") | {"fit": {"epochs": 2}})
    for job_id in (vae, cgan):
        assert wait_for(client, job_id, FINISHED)["status"] == "succeeded"
    page = dash.page
    dash.open(f"/jobs/{vae}/try")
    with page.expect_response(lambda r: r.url.endswith("/predict")) as answered:
        dash.draw_zero()
    assert answered.value.json()["operation"] == "reconstruct"
    pair = page.locator(".try-output .sample-cell")
    assert [pair.nth(i).inner_text() for i in range(2)] == ["input", "reconstruction"]
    page.click("button:has-text('Sample')")
    page.wait_for_selector(".try-card:has-text('Sample') .sample-grid canvas >> nth=15")
    sizes = page.eval_on_selector_all(
        ".try-card:has-text('Sample') .sample-grid canvas", "cs => cs.map(c => [c.width, c.height])"
    )
    assert sizes == [[8, 8]] * 16  # the dataset's 8x8 samples, drawn pixel for pixel
    dash.open(f"/jobs/{cgan}/try")
    page.click("button:has-text('Generate')")
    page.wait_for_selector(".sample-grid canvas >> nth=15")
    captions = page.locator(".sample-grid figcaption").all_inner_texts()
    assert captions == [str(i % 10) for i in range(16)]  # a cGAN: one class after another


def test_the_jobs_list_filters_by_status_and_name(
    dash: Dashboard, client: httpx.Client, service: Service, key: str
) -> None:
    marker = secrets.token_hex(3)
    quick = submit(service.url, key, example("iris_mlp") | {"name": f"filter-{marker}-quick"})
    slow = submit(
        service.url,
        key,
        example("digits_mlp") | {"name": f"filter-{marker}-slow", "fit": {"epochs": 1000}},
    )
    client.post(f"/v1/jobs/{slow}/cancel")
    for job_id in (quick, slow):
        wait_for(client, job_id, FINISHED)
    dash.open("/jobs")
    page = dash.page
    page.wait_for_selector(f"tr[data-job-id='{quick}'] .badge-succeeded")
    dash.screenshot("jobs-list.png")
    page.fill("input[name=name]", marker)
    page.wait_for_function("() => document.querySelectorAll('table.jobs tbody tr').length === 2")
    page.select_option("select[name=status]", "cancelled")
    page.wait_for_selector(f"tr[data-job-id='{slow}']")
    page.wait_for_function("() => document.querySelectorAll('table.jobs tbody tr').length === 1")
    assert "status=cancelled" in page.url and f"name={marker}" in page.url
    page.reload()  # the filters live in the URL (the key never does)
    page.wait_for_selector(f"tr[data-job-id='{slow}']")
    assert page.locator("select[name=status]").input_value() == "cancelled"
    page.select_option("select[name=status]", "succeeded")
    row = page.locator(f"tr[data-job-id='{quick}']")
    assert row.locator(".badge").inner_text() == "succeeded"
    assert row.locator("td").nth(4).inner_text().startswith("val_accuracy")
