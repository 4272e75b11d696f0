#!/usr/bin/env python3
"""How fast a gevent relay loop can copy, by read size: the bulk-relay ceiling.

    python bench/relay_probe.py [--total-mib 1024]

Not mailgate: a minimal two-greenlet relay (the shape of mailgate/relay.py)
written here, between the load generator and the bulk POP3 backend, pinned
like the proxies in bench/run.py. It runs ``recv(size)`` + ``sendall`` as
mailgate does, and ``recv_into`` + ``send`` of a memoryview, at 4 KiB (what
mailgate reads with the default proxy_buffer and pop3_client_buffer) and at
larger sizes, to show what the read size alone is worth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from procs import BENCH, LOAD_CORE, PROXY_CORE, Fakes  # noqa: E402

RELAY = r'''
from gevent import monkey; monkey.patch_all()
import gevent, socket, sys
from gevent.server import StreamServer
backend_port, port, size, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def pump(src, dst):
    if mode == "recv+sendall":
        while True:
            data = src.recv(size)
            if not data:
                break
            dst.sendall(data)
    else:
        buf = bytearray(size)
        view = memoryview(buf)
        while True:
            n = src.recv_into(buf)
            if not n:
                break
            sent = 0
            while sent < n:
                sent += dst.send(view[sent:n])
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass

def handle(client, addr):
    backend = socket.create_connection(("127.0.0.1", backend_port))
    other = gevent.spawn(pump, client, backend)
    pump(backend, client)
    other.kill()
    backend.close()

StreamServer(("127.0.0.1", port), handle).serve_forever()
'''

CASES = ((4096, "recv+sendall"), (4096, "recv_into+send"), (65536, "recv+sendall"), (65536, "recv_into+send"),
         (262144, "recv_into+send"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-mib", type=int, default=1024)
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOAD_CORE})
    workdir = Path(tempfile.mkdtemp(prefix="mailgate-relay-probe-"))
    script = workdir / "relay.py"
    script.write_text(RELAY)
    try:
        fakes = Fakes(workdir).start()
        print("read size  loop             MiB/s   relay CPU ms/GiB  user CPU %")
        for size, mode in CASES:
            port = procs.free_port()
            relay = procs.spawn([procs.python(), str(script), str(fakes.ports["bulk_pop3"]), str(port), str(size), mode],
                                PROXY_CORE)
            procs.wait_until(lambda: procs.greets(port), 20, "the relay")
            out = subprocess.run([procs.python(), str(BENCH / "loadgen.py"), "download", "--port", str(port), "--proto",
                                  "pop3", "--sessions", "8", "--total-mib", str(args.total_mib), "--proxy-pid",
                                  str(relay.pid), "--load-pid", str(fakes.pid)],
                                 capture_output=True, text=True, timeout=180, preexec_fn=procs.pinned(LOAD_CORE))
            procs.stop(relay)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{size:9d}  {mode:15s} {result.get('mib_per_s', 0):7.0f}  {result.get('proxy_cpu_ms_per_gib', 0):16.0f}"
                  f"  {result.get('proxy_user_pct', 0):9.0f}   (others on the machine: {result.get('foreign_cpu_pct')}%)",
                  flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
