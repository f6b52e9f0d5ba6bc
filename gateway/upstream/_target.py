"""Where the wire client sends a request: the origin, or a forward proxy from the environment.

A proxy comes from ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` (lower case too) unless
``NO_PROXY`` names the host, as ``urllib.request`` reads them (httpx's ``trust_env`` reads the
same variables). An ``http`` URL goes to the proxy in absolute form; an ``https`` URL goes
through a ``CONNECT`` tunnel, TLS end to end with the origin. A proxy URL's user and password
become a ``Proxy-Authorization: Basic`` header.
"""

from __future__ import annotations

import asyncio
import base64
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["Proxy", "Target", "open_tunnel"]

_MAX_HEAD = 16 * 1024


@dataclass(frozen=True, slots=True)
class Proxy:
    """A forward proxy: where to connect, and the header that authenticates to it (or "")."""

    host: str
    port: int
    authorization: str = ""

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """An ``http://[user:password@]host[:port]`` proxy URL; anything else raises ValueError."""
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http proxy URL: {url!r}")
        authorization = ""
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        return cls(parts.hostname, parts.port or 80, authorization)


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go: ``key`` picks the pool, ``authority`` is the Host header, ``path`` the
    request target (absolute through a plain proxy), ``proxy`` the proxy in between or None."""

    scheme: str
    host: str
    port: int
    authority: str
    path: str
    proxy: Proxy | None = None

    @classmethod
    def parse(cls, url: str, *, proxies: bool = False) -> Target:
        """Split an ``http://`` or ``https://`` URL; anything else raises ValueError. With
        ``proxies``, the environment's proxy for it, if any."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        authority = parts.netloc.rpartition("@")[2]
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy = _proxy_for(parts.scheme, authority) if proxies else None
        if proxy is not None and parts.scheme == "http":
            path = f"http://{authority}{path}"  # absolute form: the proxy forwards it
        return cls(parts.scheme, parts.hostname, port, authority, path, proxy)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


def _proxy_for(scheme: str, authority: str) -> Proxy | None:
    found = urllib.request.getproxies()
    url = found.get(scheme) or found.get("all")
    if not url or urllib.request.proxy_bypass(authority):
        return None
    return Proxy.parse(url)


class _Head(asyncio.Protocol):
    """Reads the proxy's answer to ``CONNECT``: up to the end of its head."""

    def __init__(self) -> None:
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._data = b""

    def data_received(self, data: bytes) -> None:
        self._data += data
        if b"\r\n\r\n" in self._data or len(self._data) > _MAX_HEAD:
            if not self.done.done():
                self.done.set_result(self._data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the proxy closed the connection"))


async def open_tunnel(target: Target) -> asyncio.Transport:
    """A plain connection through ``target.proxy`` to the origin (``CONNECT``), ready for TLS.

    Raises OSError (ConnectionError when the proxy refuses). Bound it with a timeout."""
    proxy = target.proxy
    if proxy is None:
        raise ValueError("no proxy")
    loop = asyncio.get_running_loop()
    transport, head = await loop.create_connection(_Head, proxy.host, proxy.port)
    authority = f"{target.host}:{target.port}"
    request = f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n"
    if proxy.authorization:
        request += f"proxy-authorization: {proxy.authorization}\r\n"
    transport.write((request + "\r\n").encode())
    try:
        answer = await head.done
        status = answer.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(status) < 2 or status[1] != b"200":
            line = answer.split(b"\r\n", 1)[0][:200].decode("latin-1")
            raise ConnectionError(f"the proxy refused the tunnel: {line}")
    except BaseException:
        transport.close()
        raise
    return transport
