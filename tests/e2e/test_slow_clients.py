"""Slow clients against real API processes, over real sockets: bodies stalled under their
Content-Length (1000 of them stayed open for good), requests stalled in their request line or
headers, and more connections than a process may hold. A `fitserve api` (embedded SQLite, no
worker) with one-second timeouts, and a `fitserve up` that holds at most 8 connections."""

from __future__ import annotations

import resource
import select
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import Service, _base_env, free_port, lone_api

SLOW = {
    "FITSERVE_HEADER_TIMEOUT_SECONDS": "1",
    "FITSERVE_BODY_IDLE_TIMEOUT_SECONDS": "1",
    "FITSERVE_BODY_READ_TIMEOUT_SECONDS": "4",
    "FITSERVE_RATE_LIMIT_PER_SECOND": "0",
}
CAPPED = {"FITSERVE_MAX_CONNECTIONS": "8", "FITSERVE_HEADER_TIMEOUT_SECONDS": "3"}
STALLED = 1000  # the count
BOUNDARY = "slowboundary"


def _stop_and_show(request: pytest.FixtureRequest, service: Service) -> None:
    if getattr(request.session, "testsfailed", 0):
        print(f"\n{service.name} service logs:\n{service.tail()}")
    service.stop()


@pytest.fixture(scope="module")
def slow(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this process holds 1000 sockets
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    with lone_api(tmp_path_factory.mktemp("slow"), "slow", SLOW, request) as service:
        yield service


@pytest.fixture(scope="module")
def capped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    tmp: Path = tmp_path_factory.mktemp("capped")
    port = free_port()
    service = Service("capped", f"http://127.0.0.1:{port}", _base_env(tmp) | CAPPED, tmp)
    service.start("up", "--port", str(port))
    try:
        service.wait_ready()
        yield service
    finally:
        _stop_and_show(request, service)


# --- raw sockets -----------------------------------------------------------------------------------


@dataclass
class Conn:
    sock: socket.socket
    sent: float
    answer: bytes = b""
    closed: float | None = None


def address(service: Service) -> tuple[str, int]:
    url = urlsplit(service.url)
    return str(url.hostname), int(url.port or 80)


def connect(service: Service, payload: bytes = b"") -> Conn:
    sock = socket.create_connection(address(service), timeout=10)
    if payload:
        sock.sendall(payload)
    return Conn(sock, time.monotonic())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def read_until_closed(conns: list[Conn], timeout: float, pid: int | None = None) -> float:
    """Read every connection until the server closes it (or `timeout`); the API's peak RSS (MB)."""
    selector = selectors.DefaultSelector()
    for conn in conns:
        conn.sock.setblocking(False)
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    deadline, peak = time.monotonic() + timeout, 0.0
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(0.1):
            conn = key.data
            try:
                data = conn.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            conn.answer += data
            if not data:
                conn.closed = time.monotonic()
                selector.unregister(conn.sock)
        peak = max(peak, rss_mb(pid)) if pid is not None else peak
    selector.close()
    return peak


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, bytes]:
    """One response with a Content-Length: its status and body."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), body


def post_head(
    service: Service, path: str, length: int, content_type: str, key: bool = True
) -> bytes:
    auth = f"Authorization: Bearer {service.keys['a']}\r\n" if key else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {urlsplit(service.url).netloc}\r\n{auth}Content-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def multipart(content: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="slow.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def csv(rows: int) -> bytes:
    return b"a,b\n" + b"".join(f"{i % 7},{i % 3}\n".encode() for i in range(rows))


def stalled_json(service: Service) -> bytes:
    return post_head(service, "/v1/jobs", 50_000, "application/json") + b'{"name": "' + b"x" * 1000


def stalled_upload(service: Service) -> bytes:
    head = post_head(service, "/v1/datasets", 200_000, f"multipart/form-data; boundary={BOUNDARY}")
    return head + multipart(csv(2000))[:-40]


# --- bodies --------------------------------------------------------------------------------------


def probe_healthz(service: Service, stop: threading.Event, seconds: list[float]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            assert client.get(f"{service.url}/healthz").status_code == 200
            seconds.append(time.perf_counter() - started)
            time.sleep(0.05)


def stored(service: Service) -> tuple[int, int, list[str]]:
    """Jobs and datasets of the tenant, and the files in the upload folder."""
    with service.client() as client:
        jobs, datasets = client.get("/v1/jobs").json(), client.get("/v1/datasets").json()["data"]
    folder = service.data_dir / "artifacts" / "datasets"
    files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return jobs["count"], sum(d["source"] == "uploaded" for d in datasets), files


def test_bodies_stalled_under_their_content_length_are_answered_408_and_closed(
    slow: Service,
) -> None:
    """1000 connections (JSON jobs and multipart uploads) send their headers and part of their body,
    then stall: each is answered 408 and closed once no data came for BODY_IDLE_TIMEOUT_SECONDS (1 s),
    while /healthz keeps answering; nothing is stored, and the API's memory stays flat."""
    pid, before = slow.processes[0].pid, stored(slow)  # the key is remembered before the flood
    rss_before = rss_mb(pid)
    stop, probes = threading.Event(), []  # type: ignore[var-annotated]
    prober = threading.Thread(target=probe_healthz, args=(slow, stop, probes))
    prober.start()
    try:
        conns = [
            connect(slow, stalled_json(slow) if i % 2 else stalled_upload(slow))
            for i in range(STALLED)
        ]
        peak = read_until_closed(conns, timeout=20, pid=pid)
    finally:
        stop.set()
        prober.join()
    for conn in conns:
        conn.sock.close()
    waited = sorted(conn.closed - conn.sent for conn in conns if conn.closed is not None)
    answered = [conn.answer for conn in conns if conn.answer.startswith(b"HTTP/1.1 408")]
    print(
        f"\n{len(answered)} of {STALLED} stalled bodies answered 408, {len(waited)} closed"
        + (f" after {waited[0]:.2f}-{waited[-1]:.2f} s" if waited else "")
        + f"; /healthz meanwhile: {len(probes)} probes, slowest {max(probes):.3f} s; API RSS {rss_before:.0f} MB"
        f" -> peak {peak:.0f} MB (+{peak - rss_before:.0f} MB)"
    )
    assert len(answered) == STALLED and len(waited) == STALLED, conns[0].answer[:300]
    assert waited[0] >= 0.9 and waited[-1] < 10
    assert (
        b"connection: close" in answered[0]
        and b"no data of the request body came in 1 s" in answered[0]
    )
    assert max(probes) < 2.0
    assert peak - rss_before < 300
    assert stored(slow) == before  # no handler went on with a cut body


def test_a_slow_steady_upload_lands_and_a_trickle_is_cut_at_the_total(slow: Service) -> None:
    """An upload sent in pieces 0.4 s apart takes 3 s, three idle timeouts, and lands; a body that
    trickles a little every 0.5 s is answered 408 at BODY_READ_TIMEOUT_SECONDS (4 s)."""

    def steady() -> tuple[int, bytes, float]:
        body = multipart(csv(1500))
        conn = connect(
            slow,
            post_head(slow, "/v1/datasets", len(body), f"multipart/form-data; boundary={BOUNDARY}"),
        )
        with conn.sock:
            step = len(body) // 8 + 1
            for i in range(0, len(body), step):
                conn.sock.sendall(body[i : i + step])
                time.sleep(0.4)
            status, answer = read_response(conn.sock)
        return status, answer, time.monotonic() - conn.sent

    def trickle() -> tuple[int, bytes, float]:
        conn = connect(
            slow, post_head(slow, "/v1/jobs", 10_000, "application/json") + b'{"name": "'
        )
        with conn.sock:
            for _ in range(20):  # until the server answers
                if select.select([conn.sock], [], [], 0.5)[0]:
                    break
                conn.sock.sendall(b"x" * 50)
            status, answer = read_response(conn.sock)
        return status, answer, time.monotonic() - conn.sent

    with ThreadPoolExecutor(2) as pool:
        steady_run, trickle_run = pool.submit(steady), pool.submit(trickle)
        (status, answer, took), (cut, detail, cut_after) = steady_run.result(), trickle_run.result()
    print(f"\nsteady upload: {status} after {took:.1f} s; trickle: {cut} after {cut_after:.1f} s")
    assert status == 201 and took > 3, answer
    assert cut == 408 and 3.9 < cut_after < 7, detail
    assert b"the request body took longer than 4 s" in detail


# --- headers -------------------------------------------------------------------------------------


def test_requests_stalled_in_their_request_line_or_headers_are_closed(slow: Service) -> None:
    """300 connections: silent ones, half a request line, headers cut off: each is closed at
    HEADER_TIMEOUT_SECONDS (1 s), a 408 to those that began a request."""
    netloc = urlsplit(slow.url).netloc
    kinds = [b"", b"POST /v1/jo", f"POST /v1/jobs HTTP/1.1\r\nHost: {netloc}\r\nAuthoriz".encode()]
    conns = [connect(slow, kinds[i % 3]) for i in range(300)]
    read_until_closed(conns, timeout=10)
    for conn in conns:
        conn.sock.close()
    waited = sorted(conn.closed - conn.sent for conn in conns if conn.closed is not None)
    print(
        f"\n{len(waited)} of 300 stalled requests closed"
        + (f" after {waited[0]:.2f}-{waited[-1]:.2f} s" if waited else "")
    )
    assert len(waited) == 300 and waited[0] >= 0.9 and waited[-1] < 5
    assert all(conn.answer == b"" for conn in conns[::3])  # nothing asked, nothing said
    assert all(conn.answer.startswith(b"HTTP/1.1 408") for i, conn in enumerate(conns) if i % 3)


def test_keep_alive_outlives_the_header_timeout_and_a_split_request_is_fine(slow: Service) -> None:
    """The header timeout bounds a request's headers, not the quiet between requests."""
    request = f"GET /healthz HTTP/1.1\r\nHost: {urlsplit(slow.url).netloc}\r\n\r\n".encode()
    with connect(slow, request).sock as sock:
        assert read_response(sock)[0] == 200
        time.sleep(1.5)  # past HEADER_TIMEOUT_SECONDS, within uvicorn's keep-alive (5 s)
        for piece in (request[:10], request[10:25], request[25:]):
            sock.sendall(piece)
            time.sleep(0.2)
        assert read_response(sock)[0] == 200


def test_the_rest_of_a_body_after_its_answer_is_bounded_too(slow: Service) -> None:
    """A 405 answered without reading the body left the connection open for the rest of it,
    trickled forever; now the rest (and the next headers) must come within HEADER_TIMEOUT_SECONDS."""
    conn = connect(
        slow, post_head(slow, "/healthz", 100_000, "application/json", key=False) + b"x" * 100
    )
    with conn.sock:
        assert read_response(conn.sock)[0] == 405
        answered, closed = time.monotonic(), None
        conn.sock.settimeout(0.2)
        while closed is None and time.monotonic() - answered < 6:
            try:
                conn.sock.sendall(b"x" * 10)
                if conn.sock.recv(100) == b"":
                    closed = time.monotonic()
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = time.monotonic()
    assert closed is not None and closed - answered < 3, "the rest of the body trickled on"


# --- connections ---------------------------------------------------------------------------------


def get_healthz(conn: Conn, service: Service) -> int:
    conn.sock.sendall(
        f"GET /healthz HTTP/1.1\r\nHost: {urlsplit(service.url).netloc}\r\n\r\n".encode()
    )
    return read_response(conn.sock)[0]


def test_connections_past_the_cap_are_503_and_a_freed_slot_comes_back(capped: Service) -> None:
    """MAX_CONNECTIONS=8: eight kept-alive connections are served; the next eight are answered 503
    and closed; past twice the cap a connection is closed at once; a slot freed is served again."""
    time.sleep(0.5)  # wait_ready's own connections are gone
    held = [connect(capped) for _ in range(8)]
    assert [get_healthz(conn, capped) for conn in held] == [200] * 8
    over = [connect(capped) for _ in range(8)]
    time.sleep(0.3)
    beyond = connect(capped)
    read_until_closed([beyond], timeout=2)
    assert beyond.closed is not None and beyond.answer == b"", beyond.answer
    refused = [get_healthz(conn, capped) for conn in over]
    read_until_closed(over, timeout=2)
    assert refused == [503] * 8 and all(conn.closed is not None for conn in over)
    held.pop().sock.close()
    time.sleep(0.3)
    again = connect(capped)
    assert get_healthz(again, capped) == 200
    assert get_healthz(held[0], capped) == 200  # the connections inside the cap kept working
    for conn in [*held, again, *over, beyond]:
        conn.sock.close()
