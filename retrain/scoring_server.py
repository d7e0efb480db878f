"""How every endpoint slot's inference server (`azmlinfsrv`) runs: the same settings locally (the
local endpoint's slots) and in Azure (the deployment's `environment_variables`).

All of them are the server's own settings: `azmlinfsrv` reads WORKER_COUNT (gunicorn's `-w`) and
WORKER_TIMEOUT; gunicorn itself reads GUNICORN_CMD_ARGS for everything azmlinfsrv does not set on its
command line (worker class, threads, keep-alive); torch reads OMP_NUM_THREADS / MKL_NUM_THREADS.
Chosen from measurements on 2 cores (bench/bench_scoring.py; docs/benchmarks.md has the figures):

- gthread, not gunicorn's default sync worker: the sync worker closes every connection after one
  response and then lingers up to 2 s for the client's FIN (gunicorn >= 26 `close_graceful`), so a
  keep-alive client (a pooling proxy, Azure's front end, `requests.Session`) holds the only worker
  idle until it gets round to closing; gthread keeps connections open and parks idle ones in its
  poller, so they cost no thread.
- one torch thread per worker: a one-window LSTM forward gains nothing from intra-op threads, and two
  of them per request fighting over 2 busy cores put p99 at 150+ ms (0.3 ms with one).
- keep-alive 75 s: longer than any client keeps an idle pooled connection, so a client never reuses a
  connection the server is closing at that moment (the race that fails a POST).
"""

from __future__ import annotations

SLOT_WORKERS = 1
SLOT_THREADS = 4
SLOT_KEEP_ALIVE_S = 75
# What the slot serves at once (Azure's max_concurrent_requests_per_instance; its default, 1, would
# queue in front of the threads).
SLOT_CONCURRENT_REQUESTS = SLOT_WORKERS * SLOT_THREADS

SLOT_SERVER_ENVIRONMENT: dict[str, str] = {
    "WORKER_COUNT": str(SLOT_WORKERS),
    "GUNICORN_CMD_ARGS": f"--worker-class gthread --threads {SLOT_THREADS} --keep-alive {SLOT_KEEP_ALIVE_S}",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
