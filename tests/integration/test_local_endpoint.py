"""The local online endpoint for real: two `azmlinfsrv` slots running scorer/score.py with two real
models behind the stable scoring URL; traffic 100/0 -> 90/10 -> 0/100 under continuous load without a
single failed request; the URL survives stop_all() + restore(); bad payloads answer the scorer's 400. The models: the trained LSTM
fixture and a ridge model (two families, so the slots answer differently)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from retrain.local.endpoint import LocalEndpoints
from retrain.local.processes import process_alive, read_json
from retrain.ports import EndpointBusyError, ModelRef, PlatformError, TransientPlatformError
from tests.bundle_models import ridge_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SCORER = REPO / "scorer" / "score.py"
NAME = "msft-forecaster"
ENDPOINT = "msft-test"


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second real model of another family (ridge, fitted in process: no second training run), so the two
    slots answer differently."""
    out = tmp_path_factory.mktemp("trained-second")
    ridge_model(out / "model", "MSFT", window=20)
    return out


@pytest.fixture(scope="module")
def models(trained_model: Path, second_model: Path) -> dict[str, Path]:
    return {"1": trained_model / "model", "2": second_model / "model"}


@pytest.fixture(scope="module")
def closes(sample_csv: Path) -> list[float]:
    return [float(c) for c in pd.read_csv(sample_csv)["Close"].tail(40)]


def _fetcher(models: dict[str, Path]):
    def fetch(model: ModelRef, dest: Path) -> None:  # what the registry download does: dest/model/...
        dest.mkdir(parents=True, exist_ok=True)
        if model.version not in models:  # a corrupt model, to see a deployment fail
            (dest / "model").mkdir()
            (dest / "model" / "MLmodel").write_text("not: [an mlflow model")
            return
        shutil.copytree(models[model.version], dest / "model")

    return fetch


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("endpoint-state")


@pytest.fixture(scope="module")
def endpoints(state_dir: Path, models: dict[str, Path]) -> Iterator[LocalEndpoints]:
    eps = LocalEndpoints(state_dir, _fetcher(models), SCORER)
    yield eps
    eps.stop_all()


def _post(url: str, payload: object, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _slot_pids(state_dir: Path, endpoint: str = ENDPOINT) -> dict[str, int]:
    state = read_json(state_dir / "endpoints" / endpoint / "state.json")
    return {slot: info["pid"] for slot, info in state["slots"].items()}


@pytest.fixture(scope="module")
def live(endpoints: LocalEndpoints) -> LocalEndpoints:
    """The endpoint with model 1 on blue (100 %) and model 2 on green (0 %), both answering."""
    created = endpoints.begin_create_endpoint(ENDPOINT)
    assert created.state == "Succeeded" and created.scoring_uri and created.traffic == {}
    assert endpoints.begin_create_endpoint(ENDPOINT).scoring_uri == created.scoring_uri  # idempotent
    with pytest.raises(PlatformError, match="404"):
        endpoints.invoke(ENDPOINT, {"close": [1.0] * 40})  # nothing deployed yet: no valid deployment
    blue = endpoints.begin_deployment(ENDPOINT, "blue", ModelRef(NAME, "1"))
    assert blue.state in ("Creating", "Succeeded")
    endpoints.wait_until_ready(ENDPOINT)  # one operation at a time per endpoint
    green = endpoints.begin_deployment(ENDPOINT, "green", ModelRef(NAME, "2"))
    assert green.state in ("Creating", "Succeeded")
    endpoints.wait_until_ready(ENDPOINT)
    assert endpoints.get_deployment(ENDPOINT, "blue").state == "Succeeded"
    endpoints.set_traffic(ENDPOINT, {"blue": 100, "green": 0})
    endpoints.wait_until_ready(ENDPOINT)
    return endpoints


def test_each_slot_serves_its_own_model_and_can_be_pinned(live: LocalEndpoints, closes: list[float]) -> None:
    state = live.get_endpoint(ENDPOINT)
    assert state.traffic == {"blue": 100, "green": 0}
    assert state.deployments["green"]["version"] == "2"
    routed = live.invoke(ENDPOINT, {"close": closes})
    assert routed["model"] == {"name": NAME, "version": "1", "window": routed["model"]["window"]}
    assert len(routed["forecast"]) == 1
    pinned = live.invoke(ENDPOINT, {"close": closes}, slot="green")
    assert pinned["model"]["version"] == "2"
    assert pinned["forecast"] != routed["forecast"]  # two different real models
    # Repeating a deployment of the same model to a live slot changes nothing.
    pids = _slot_pids(live.root.parent)
    assert live.begin_deployment(ENDPOINT, "blue", ModelRef(NAME, "1")).state == "Succeeded"
    assert _slot_pids(live.root.parent) == pids


def test_traffic_shifts_drop_no_request(live: LocalEndpoints, closes: list[float]) -> None:
    """A traffic update is long-running: the router may take the new table at any moment between the
    call and `wait_until_ready` returning. So each phase is told by events, not by the clients' clocks
    against a guess: "before" is a request answered before the update was asked, "canary" one sent after
    `wait_until_ready` returned and answered before the next update was asked; requests in flight while an
    update applies may reach either model, and only have to succeed."""
    url = live.scoring_uri(ENDPOINT)
    results: list[tuple[float, float, int, str, str]] = []  # (sent, answered, status, version, slot header)
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status, body, headers = _post(url, {"close": closes})
                version = body.get("model", {}).get("version", "?")
                slot = headers.get("azureml-model-deployment", "")
                results.append((sent, time.monotonic(), status, version, slot))
            except OSError as exc:  # a dropped connection counts as a failure
                results.append((sent, time.monotonic(), 0, repr(exc), ""))

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        _wait_for(lambda: len(results) >= 10)
        canary_asked = time.monotonic()
        live.set_traffic(ENDPOINT, {"blue": 90, "green": 10})
        live.wait_until_ready(ENDPOINT)
        canary_from = time.monotonic()
        _wait_for(lambda: sum(r[0] > canary_from for r in results) >= 40)
        full_asked = time.monotonic()
        live.set_traffic(ENDPOINT, {"blue": 0, "green": 100})
        live.wait_until_ready(ENDPOINT)
        full_from = time.monotonic()
        _wait_for(lambda: sum(r[0] > full_from for r in results) >= 20)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)

    failures = [r for r in results if r[2] != 200]
    assert not failures, failures[:5]
    before = [r[3] for r in results if r[1] < canary_asked]
    canary = [r[3] for r in results if r[0] > canary_from and r[1] < full_asked]
    after = [r[3] for r in results if r[0] > full_from]
    assert len(before) >= 10 and set(before) == {"1"}
    assert {"1", "2"} == set(canary) and canary.count("1") > canary.count("2")
    assert len(after) >= 20 and set(after) == {"2"}
    assert all(r[4] == {"1": "blue", "2": "green"}[r[3]] for r in results)  # Azure's response header


def test_bad_payload_through_the_router_answers_the_scorers_400(live: LocalEndpoints) -> None:
    url = live.scoring_uri(ENDPOINT)
    status, body, _ = _post(url, {"close": [1.0, 2.0]})
    assert status == 400 and "close" in json.dumps(body)
    status, body, _ = _post(url, {"nonsense": True})
    assert status == 400
    with pytest.raises(PlatformError) as info:
        live.invoke(ENDPOINT, {"close": "abc"})
    assert not isinstance(info.value, TransientPlatformError) and "400" in str(info.value)
    status, body, _ = _post(url, {"close": [1.0] * 40}, headers={"azureml-model-deployment": "red"})
    assert status == 404 and "not found" in body["error"]
    with urllib.request.urlopen(url.rsplit("/", 1)[0] + "/", timeout=10) as response:  # liveness
        assert response.status == 200


def test_traffic_and_deletion_rules(live: LocalEndpoints) -> None:
    with pytest.raises(PlatformError, match="sum to 100"):
        live.set_traffic(ENDPOINT, {"blue": 50, "green": 60})
    current = live.get_endpoint(ENDPOINT).traffic
    serving = max(current, key=lambda s: current[s])
    with pytest.raises(PlatformError, match="set its traffic to 0"):
        live.begin_delete_deployment(ENDPOINT, serving)
    with pytest.raises(PlatformError, match="does not exist"):
        live.begin_deployment("no-such-endpoint", "blue", ModelRef(NAME, "1"))
    assert live.get_endpoint("no-such-endpoint").state == "NotFound"


def test_a_traffic_update_is_long_running_and_the_endpoint_takes_one_operation_at_a_time(
    live: LocalEndpoints,
) -> None:
    before = live.get_endpoint(ENDPOINT)
    assert before.state == "Succeeded"
    serving = before.serving_slot()
    other = next(s for s in before.traffic if s != serving)
    asked = {serving: 50, other: 50}
    begun = live.set_traffic(ENDPOINT, asked)
    assert begun.state == "Updating" and begun.traffic == before.traffic  # not applied yet
    with pytest.raises(EndpointBusyError, match="busy"):
        live.set_traffic(ENDPOINT, {serving: 100, other: 0})
    with pytest.raises(EndpointBusyError):
        live.begin_delete_deployment(ENDPOINT, other)
    new_model = "1" if before.deployments[other]["version"] == "2" else "2"
    with pytest.raises(EndpointBusyError):
        live.begin_deployment(ENDPOINT, other, ModelRef(NAME, new_model))
    _wait_for(lambda: live.get_endpoint(ENDPOINT).state == "Succeeded")
    assert live.get_endpoint(ENDPOINT).traffic == asked
    live.set_traffic(ENDPOINT, {serving: 100, other: 0})  # accepted again once the first one is done
    _wait_for(lambda: live.get_endpoint(ENDPOINT).state == "Succeeded")
    assert live.get_endpoint(ENDPOINT).traffic == {serving: 100, other: 0}


def test_scoring_url_survives_stop_all_and_restore(
    live: LocalEndpoints, state_dir: Path, models: dict[str, Path], closes: list[float]
) -> None:
    before = live.get_endpoint(ENDPOINT)
    old_pids = _slot_pids(state_dir)
    # Another process on the same state dir (a `retrain run` next to `retrain serve`) stops only its own.
    LocalEndpoints(state_dir, _fetcher(models), SCORER).stop_all()
    assert all(process_alive(pid) for pid in old_pids.values())
    live.stop_all()
    assert not any(process_alive(pid) for pid in old_pids.values())
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(before.scoring_uri.rsplit("/", 1)[0] + "/", timeout=5)

    restarted = LocalEndpoints(state_dir, _fetcher(models), SCORER)  # as after a process restart
    try:
        [restored] = restarted.restore()
        assert restored.scoring_uri == before.scoring_uri and restored.traffic == before.traffic
        # The slots are still loading their models: the router says so and when to retry, never 502.
        status, body, headers = _post(before.scoring_uri, {"close": closes})
        assert status == 503 and headers.get("Retry-After") and "retry" in body["error"], (status, body)
        restarted.wait_until_ready(ENDPOINT)
        assert _slot_pids(state_dir).keys() == old_pids.keys() and _slot_pids(state_dir) != old_pids
        serving = max(before.traffic, key=lambda s: before.traffic[s])
        status, body, headers = _post(before.scoring_uri, {"close": closes})
        assert status == 200 and headers["azureml-model-deployment"] == serving
        # The retired slot goes: traffic 0 first, then the process stops and its state is gone.
        idle = next(s for s in before.traffic if s != serving)
        idle_pid = _slot_pids(state_dir)[idle]
        assert restarted.begin_delete_deployment(ENDPOINT, idle).state == "Deleting"
        _wait_for(lambda: restarted.get_deployment(ENDPOINT, idle).state == "NotFound")
        assert not process_alive(idle_pid)
        assert restarted.get_deployment(ENDPOINT, idle).state == "NotFound"
        assert set(restarted.get_endpoint(ENDPOINT).traffic) == {serving}
        assert _post(before.scoring_uri, {"close": closes})[0] == 200
    finally:
        restarted.stop_all()


def test_a_slot_whose_model_cannot_load_reports_failed_with_its_log(endpoints: LocalEndpoints) -> None:
    endpoints.begin_create_endpoint("broken-test")
    started = endpoints.begin_deployment("broken-test", "blue", ModelRef(NAME, "666"))
    assert started.state in ("Creating", "Failed")
    deadline = time.monotonic() + 120
    state = endpoints.get_deployment("broken-test", "blue")
    while state.state == "Creating" and time.monotonic() < deadline:
        time.sleep(0.25)
        state = endpoints.get_deployment("broken-test", "blue")
    assert (
        state.state == "Failed"
        and "not running" in (state.error or "")
        and "Worker failed to boot" in state.error
    )
    with pytest.raises(PlatformError, match="not running"):
        endpoints.set_traffic("broken-test", {"blue": 100})
    assert endpoints.get_endpoint("broken-test").traffic == {"blue": 0}


# ----------------------------------------------------------------------------------------------------
# As strict as Azure: long-running traffic updates, one operation at a time, 404 without traffic,
# a Failed deployment must be deleted, deletes end NotFound only when gone, crashed slots restart.


def test_a_deployment_that_failed_its_first_provisioning_must_be_deleted_first(
    endpoints: LocalEndpoints,
) -> None:
    endpoints.begin_create_endpoint("failed-test")
    endpoints.begin_deployment("failed-test", "blue", ModelRef(NAME, "666"))  # a model that cannot load
    _wait_for(lambda: endpoints.get_deployment("failed-test", "blue").state == "Failed")
    with pytest.raises(PlatformError, match="failed its first provisioning") as info:
        endpoints.begin_deployment("failed-test", "blue", ModelRef(NAME, "1"))
    assert not isinstance(info.value, TransientPlatformError)
    assert endpoints.begin_delete_deployment("failed-test", "blue").state == "Deleting"
    _wait_for(lambda: endpoints.get_deployment("failed-test", "blue").state == "NotFound")
    assert endpoints.begin_deployment("failed-test", "blue", ModelRef(NAME, "1")).state in (
        "Creating",
        "Succeeded",
    )
    endpoints.wait_until_ready("failed-test")


@pytest.fixture(scope="module")
def swap_endpoint(endpoints: LocalEndpoints) -> str:
    """A second endpoint with model 1 on blue and no traffic yet."""
    name = "swap-test"
    endpoints.begin_create_endpoint(name)
    endpoints.begin_deployment(name, "blue", ModelRef(NAME, "1"))
    endpoints.wait_until_ready(name)
    return name


def test_an_endpoint_without_traffic_answers_404_but_a_pinned_request_works(
    endpoints: LocalEndpoints, swap_endpoint: str, closes: list[float]
) -> None:
    assert endpoints.get_endpoint(swap_endpoint).traffic == {"blue": 0}
    url = endpoints.scoring_uri(swap_endpoint)
    status, body, _ = _post(url, {"close": closes})
    assert status == 404 and body["error"].startswith("No valid deployments to route to")
    status, body, headers = _post(url, {"close": closes}, headers={"azureml-model-deployment": "blue"})
    assert status == 200 and headers["azureml-model-deployment"] == "blue" and body["model"]["version"] == "1"


def test_traffic_back_to_no_slot_is_taken_and_answers_as_azure_does(
    endpoints: LocalEndpoints, swap_endpoint: str, closes: list[float]
) -> None:
    """A first model that failed its live smoke test is rolled back to {blue: 0}: no slot serves. The
    router then answers unpinned requests 404 "No valid deployments to route to", as Azure does, and a
    request pinned to the live deployment still reaches it."""
    name, url = swap_endpoint, endpoints.scoring_uri(swap_endpoint)
    endpoints.set_traffic(name, {"blue": 100})
    endpoints.wait_until_ready(name)
    assert _post(url, {"close": closes})[0] == 200
    assert endpoints.set_traffic(name, {"blue": 0}).state == "Updating"
    endpoints.wait_until_ready(name)
    after = endpoints.get_endpoint(name)
    assert (after.state, after.traffic, after.serving_slot()) == ("Succeeded", {"blue": 0}, None)
    status, body, _ = _post(url, {"close": closes})
    assert status == 404 and body["error"].startswith("No valid deployments to route to")
    with pytest.raises(PlatformError, match="404"):
        endpoints.invoke(name, {"close": closes})
    assert endpoints.invoke(name, {"close": closes}, slot="blue")["model"]["version"] == "1"


class _KeepAliveClient(threading.Thread):
    """Sends scoring requests back to back on one persistent HTTP/1.1 connection (reconnecting only
    when the router closes it) and records every outcome."""

    def __init__(self, url: str, closes: list[float]) -> None:
        super().__init__(daemon=True)
        self.port = int(url.split(":")[2].split("/")[0])
        self.body = json.dumps({"close": closes}).encode()
        self.results: list[tuple[int, str]] = []  # (status, version or error)
        self.connections = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = None
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.connections += 1
            try:
                conn.request("POST", "/score", body=self.body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = json.loads(response.read())
                self.results.append((response.status, payload.get("model", {}).get("version", str(payload))))
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self.results.append((0, repr(exc)))
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


# blue -> green -> blue (models 2, 1): both directions of a swap, and a slot name deployed again after its
# delete, each under back-to-back keep-alive load; more swaps repeat the same transitions.
SWAPS = 2


def test_blue_green_swaps_under_load_fail_no_request(
    endpoints: LocalEndpoints, swap_endpoint: str, closes: list[float]
) -> None:
    name = swap_endpoint
    endpoints.set_traffic(name, {"blue": 100})
    endpoints.wait_until_ready(name)
    clients = [_KeepAliveClient(endpoints.scoring_uri(name), closes) for _ in range(2)]
    for client in clients:
        client.start()
    served: list[str] = []
    try:
        for swap in range(SWAPS):
            old = endpoints.get_endpoint(name).serving_slot()
            assert old is not None
            new = "green" if old == "blue" else "blue"
            version = "2" if swap % 2 == 0 else "1"
            endpoints.begin_deployment(name, new, ModelRef(NAME, version))
            endpoints.wait_until_ready(name)
            for traffic in ({old: 90, new: 10}, {old: 0, new: 100}):
                assert endpoints.set_traffic(name, traffic).state == "Updating"
                endpoints.wait_until_ready(name)
                assert endpoints.get_endpoint(name).traffic == traffic
            old_pid = _slot_pids(endpoints.root.parent, name)[old]
            assert endpoints.begin_delete_deployment(name, old).state == "Deleting"
            _wait_for(lambda: endpoints.get_deployment(name, old).state == "NotFound")  # noqa: B023
            assert not process_alive(old_pid)  # NotFound only once the process is gone
            served.append(version)
    finally:
        for client in clients:
            client.stop.set()
        for client in clients:
            client.join(timeout=60)
    results = [r for client in clients for r in client.results]
    failures = [r for r in results if r[0] != 200]
    assert served == ["2", "1"] * (SWAPS // 2) and len(results) > 100
    assert not failures, (len(failures), len(results), failures[:5])
    assert {"1", "2"} <= {r[1] for r in results}
    assert all(client.connections < len(client.results) / 5 for client in clients)  # kept alive


def test_a_dead_slot_is_not_routed_to_and_is_restarted(
    endpoints: LocalEndpoints, swap_endpoint: str, closes: list[float]
) -> None:
    name = swap_endpoint
    serving = endpoints.get_endpoint(name).serving_slot()
    assert serving is not None
    other = "green" if serving == "blue" else "blue"
    endpoints.begin_deployment(name, other, ModelRef(NAME, "1"))
    endpoints.wait_until_ready(name)
    endpoints.set_traffic(name, {serving: 50, other: 50})
    endpoints.wait_until_ready(name)
    client = _KeepAliveClient(endpoints.scoring_uri(name), closes)
    client.start()
    try:
        _wait_for(lambda: len(client.results) >= 10)
        victim = _slot_pids(endpoints.root.parent, name)[other]
        os.killpg(victim, signal.SIGKILL)  # the container crashes
        _wait_for(lambda: endpoints.get_deployment(name, other).state != "Succeeded", timeout=30)
        down = endpoints.get_deployment(name, other)
        assert down.state == "Updating" and "restart" in (down.error or ""), down
        assert "/" not in (down.error or "").replace("<state>/", "")  # no absolute path of the machine
        _wait_for(lambda: endpoints.get_deployment(name, other).state == "Succeeded")
        restarted = _slot_pids(endpoints.root.parent, name)[other]
        assert restarted != victim and process_alive(restarted)
        _wait_for(lambda: len(client.results) >= 40)
    finally:
        client.stop.set()
        client.join(timeout=60)
    failures = [r for r in client.results if r[0] != 200]
    assert not failures, (len(failures), len(client.results), failures[:5])


def test_a_corrupt_endpoint_state_names_its_file_and_spares_the_others(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    eps = LocalEndpoints(tmp_path, _fetcher(models), SCORER)
    try:
        eps.begin_create_endpoint("good-test")
        eps.begin_create_endpoint("bad-test")
        eps.stop_all()
        bad_file = tmp_path / "endpoints" / "bad-test" / "state.json"
        bad_file.write_text(bad_file.read_text()[:25])  # truncated mid-write by a crash or a full disk
        restarted = LocalEndpoints(tmp_path, _fetcher(models), SCORER)
        try:
            restored = restarted.restore()
            assert [e.name for e in restored] == ["good-test"]
            assert str(bad_file) in restarted.broken["bad-test"] and "backup" in restarted.broken["bad-test"]
            with pytest.raises(PlatformError, match="state file .*bad-test/state.json is unreadable"):
                restarted.get_endpoint("bad-test")
            with urllib.request.urlopen(
                restored[0].scoring_uri.replace("/score", "/-/router"), timeout=10
            ) as r:
                assert r.status == 200  # the good endpoint is served
        finally:
            restarted.stop_all()
    finally:
        eps.stop_all()


def test_a_detached_endpoint_outlives_its_host_and_the_next_host_adopts_it(
    tmp_path: Path, models: dict[str, Path], closes: list[float]
) -> None:
    """`retrain serve` runs each router as its own process: a graceful restart of the host (release,
    then a new instance that restores) fails no request and restarts nothing."""
    name = "detached-test"
    state_file = tmp_path / "endpoints" / name / "state.json"
    host = LocalEndpoints(tmp_path, _fetcher(models), SCORER)
    host.detach_routers = True
    client = None
    try:
        host.begin_create_endpoint(name)
        host.begin_deployment(name, "blue", ModelRef(NAME, "1"))
        host.wait_until_ready(name)
        host.set_traffic(name, {"blue": 100})
        host.wait_until_ready(name)
        router = read_json(state_file)["router"]
        assert router["pid"] != os.getpid() and process_alive(router["pid"], router["start_ticks"])
        client = _KeepAliveClient(host.scoring_uri(name), closes)
        client.start()
        _wait_for(lambda: len(client.results) >= 10)
        host.release()  # the host goes away; the endpoint does not
        seen = len(client.results)
        _wait_for(lambda: len(client.results) >= seen + 10)
        next_host = LocalEndpoints(tmp_path, _fetcher(models), SCORER)
        next_host.detach_routers = True
        [restored] = next_host.restore()
        assert restored.traffic == {"blue": 100}
        assert read_json(state_file)["router"] == router  # adopted, not restarted
        next_host.wait_until_ready(name)
        seen = len(client.results)
        _wait_for(lambda: len(client.results) >= seen + 10)
        client.stop.set()
        client.join(timeout=60)
        failures = [r for r in client.results if r[0] != 200]
        assert not failures, (len(failures), len(client.results), failures[:5])
        slot_pid = _slot_pids(tmp_path, name)["blue"]
        next_host.stop_all()  # what it adopted, it stops: the router and the endpoint's slots
        assert not process_alive(router["pid"], router["start_ticks"]) and not process_alive(slot_pid)
    finally:
        if client is not None:
            client.stop.set()
        state = read_json(state_file) if state_file.is_file() else {}
        for info in [*state.get("slots", {}).values(), state.get("router") or {}]:
            if process_alive(info.get("pid"), info.get("start_ticks")):
                os.killpg(info["pid"], signal.SIGKILL)
