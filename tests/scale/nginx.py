"""A real nginx (Debian's) as the reverse proxy in front of several hub processes.

:func:`nginx_config` renders the configuration that docs/scale-out.md shows (the doc's
block is checked against it); :func:`run_nginx` starts nginx in the foreground with it
under a folder of its own (logs, pid, every temp path) and stops it by PID. The
benchmark (bench/scale_bench.py) uses the same two functions.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NGINX = "/usr/sbin/nginx"
START_TIMEOUT_S = 10.0
HUB_HEADER = "X-Deltaport-Hub"  # which hub answered (nginx's $upstream_addr)

# The part of the configuration that docs/scale-out.md shows, with {servers} for the
# upstream lines and {listen} for the proxy's own address.
HTTP_BLOCK = """\
upstream deltaport_hubs {{
{servers}
}}
server {{
    listen {listen};
    client_max_body_size 16m;            # the hub refuses bigger bodies itself
    location / {{
        proxy_pass http://deltaport_hubs;
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_buffering off;             # bundles stream through, Range and all
        proxy_request_buffering off;
        proxy_read_timeout 300s;
        proxy_next_upstream error timeout http_502 http_503;
        proxy_next_upstream_tries 3;
        add_header X-Deltaport-Hub $upstream_addr always;
    }}
}}
"""
SERVER_LINE = "    server {address} max_fails=1 fail_timeout=5s;"

MAIN = """\
worker_processes 1;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
{http}
}}
"""


def http_block(hubs: Sequence[str], listen: str) -> str:
    """The upstream and server blocks for HUBS (``host:port`` each), listening on LISTEN."""
    servers = "\n".join(SERVER_LINE.format(address=h) for h in hubs)
    return HTTP_BLOCK.format(servers=servers, listen=listen)


def nginx_config(root: Path, hubs: Sequence[str], listen: str) -> str:
    """A whole nginx.conf keeping logs and temp files under ROOT."""
    lines = http_block(hubs, listen).splitlines()
    body = "\n".join("    " + line if line else "" for line in lines)
    return MAIN.format(root=root, http=body)


@dataclass(frozen=True)
class Nginx:
    """A running nginx: its URL and PID."""

    url: str
    pid: int
    root: Path

    def error_log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def run_nginx(root: Path, hubs: Sequence[str], port: int) -> Iterator[Nginx]:
    """nginx in the foreground on 127.0.0.1:PORT in front of HUBS; stopped by PID at the end.

    Raises:
        RuntimeError: nginx is not installed, exits, or does not listen in time.
    """
    if not Path(NGINX).exists() and shutil.which("nginx") is None:
        raise RuntimeError("nginx is not installed (scripts/setup.sh installs it)")
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(nginx_config(root, hubs, f"127.0.0.1:{port}"))
    args = [NGINX, "-p", str(root), "-c", str(conf), "-g", f"daemon off; pid {root}/nginx.pid;"]
    with (root / "stderr.log").open("ab") as err:
        proc = subprocess.Popen(args, stdout=err, stderr=err)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {(root / 'stderr.log').read_text()}")
            time.sleep(0.02)
        yield Nginx(f"http://127.0.0.1:{port}", proc.pid, root)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # fast shutdown: a test has nothing to finish
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
