#!/usr/bin/env python3
"""What this machine can do at most for the dispatch throughput case, with no p3s in the way.

1. spawn: 16 processes start `/bin/true` as the pilot does (own session, stdout/stderr into new
   files, wait), as fast as they can: payloads per second.
2. http: 16 keep-alive `http.client` connections POST a report-sized JSON body to a bare Tornado
   handler that parses it and answers a job-sized reply: requests per second.
3. bound: both together on the same cores, 1 / (1/spawn + 1/http): the jobs per second a pilot
   system that did no other work at all could reach here.

Prints one JSON line per case. Usage: bench/floor.py [--per N]
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import subprocess
import tempfile
import time

WORKERS = 16


def _spawner(count: int, directory: str) -> None:
    for i in range(count):
        with open(f"{directory}/{os.getpid()}-{i}.out", "w+b") as out, \
                open(f"{directory}/{os.getpid()}-{i}.err", "w+b") as err:
            subprocess.Popen(["/bin/true"], stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=directory,
                             start_new_session=True).wait()


def _client(count: int, port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"wait": 30, "report": {"event": "jobstop", "job": "0" * 36, "exit_code": 0,
                                              "usage": {"cpu_time": 0.001}, "stdout_tail": "", "stderr_tail": ""}})
    for _ in range(count):
        connection.request("POST", "/pilot", body, {"Content-Type": "application/json"})
        json.loads(connection.getresponse().read())


def _server(port_queue: multiprocessing.Queue) -> None:
    import tornado.web

    class Handler(tornado.web.RequestHandler):
        def post(self) -> None:
            json.loads(self.request.body)
            self.write({"job": {"uuid": "1" * 36, "payload": "/bin/true", "env": {}, "timelimit": 0}, "kill": False})

    async def serve() -> None:
        server = tornado.web.Application([(r"/pilot", Handler)]).listen(0, "127.0.0.1")
        port_queue.put(next(iter(server._sockets.values())).getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(serve())


def _run_parallel(target, *args) -> float:
    started = time.perf_counter()
    workers = [multiprocessing.Process(target=target, args=args) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per", type=int, default=300, help="payloads (and twice as many requests) per worker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        spawn = WORKERS * args.per / _run_parallel(_spawner, args.per, directory)
    print(json.dumps({"case": "spawn", "workers": WORKERS, "per_s": round(spawn)}), flush=True)
    port_queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=_server, args=(port_queue,))
    server.start()
    try:
        port = port_queue.get(timeout=30)
        requests = 2 * args.per
        http_rate = WORKERS * requests / _run_parallel(_client, requests, port)
    finally:
        server.terminate()
        server.join()
    print(json.dumps({"case": "http", "workers": WORKERS, "per_s": round(http_rate)}), flush=True)
    print(json.dumps({"case": "bound", "jobs_per_s": round(1 / (1 / spawn + 1 / http_rate)),
                      "cpus": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    main()
