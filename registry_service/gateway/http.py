"""Removes a ~40 ms stall from every kept-alive call to an MLflow server.

MLflow's server (uvicorn with more than one worker) leaves Nagle's algorithm on for
its connections and writes each response as headers, then body. On a reused
connection Linux delays the client's ACK of the headers by ~40 ms, and the server's
body waits for that ACK: each call took ~52 ms instead of ~6 ms on a fresh connection.

The fix is on our side of the socket: TCP_QUICKACK makes the client acknowledge at
once. Linux clears the flag whenever it leaves quick-ack mode, so it is set again
around every response read. MLflow builds its requests sessions privately (one
cached session per process) but always mounts ``TCPKeepAliveHTTPAdapter``; we give
that adapter connection pools whose connections re-arm the flag.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only

_lock = threading.Lock()
_installed = False


def _quickack(sock) -> None:
    if sock is None or TCP_QUICKACK is None:
        return
    # A socket that is already closed or not TCP has nothing to tune.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)


class _QuickAck:
    def getresponse(self, *args, **kwargs):
        _quickack(self.sock)  # before the reply arrives
        response = super().getresponse(*args, **kwargs)
        _quickack(self.sock)  # and once more for an ACK still pending after the headers
        return response


class QuickAckHTTPConnection(_QuickAck, HTTPConnection):
    pass


class QuickAckHTTPSConnection(_QuickAck, HTTPSConnection):
    pass


class QuickAckHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = QuickAckHTTPConnection


class QuickAckHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = QuickAckHTTPSConnection


POOL_CLASSES = {"http": QuickAckHTTPConnectionPool, "https": QuickAckHTTPSConnectionPool}


def install_low_latency_transport() -> bool:
    """Make every MLflow REST session in this process use quick-ack connections.

    Idempotent; returns False where the platform has no TCP_QUICKACK.
    """
    global _installed
    if TCP_QUICKACK is None:
        return False
    from mlflow.utils import request_utils

    with _lock:
        if _installed:
            return True
        adapter = request_utils.TCPKeepAliveHTTPAdapter
        original = adapter.init_poolmanager

        def init_poolmanager(self, *args, **kwargs):
            original(self, *args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = POOL_CLASSES

        adapter.init_poolmanager = init_poolmanager
        # Sessions cached before now were built with plain pools.
        request_utils._cached_get_request_session.cache_clear()
        _installed = True
        return True
