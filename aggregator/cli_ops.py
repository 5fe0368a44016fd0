"""Operator commands beside the main ones in `cli.py`: `aggregator serve`, `aggregator discover URL`."""

from __future__ import annotations

import asyncio
import sys

import click


@click.command()
@click.option("--host", default=None, help="Address to listen on (default: [serve] host).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: [serve] port).")
@click.pass_obj
def serve(obj, host: str | None, port: int | None) -> None:
    """Serve the output folder over HTTP (ETag/304, gzip, feed content types), and /metrics and
    /healthz unless [serve] turns them off, until SIGTERM."""
    import contextlib
    import signal
    import threading

    from .cli import fail
    from .ops import Ops, start_servers

    settings = obj.settings()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    listen = (host or settings.serve.host, settings.serve.port if port is None else port)
    watched = settings.serve.metrics or settings.serve.healthz
    # /healthz asks the database and /metrics reads the sources' state; files alone need neither.
    with obj.store(settings) if watched else contextlib.nullcontext() as store:
        try:
            servers = start_servers(Ops(settings, store), listen)
        except OSError as e:
            fail(f"cannot listen: {e}")
        click.echo(f"serving {settings.output.dir} at {servers[0].url}", err=True)
        while not stop.wait(3600):
            pass
        for server in servers:
            server.shutdown()
            server.server_close()


@click.command()
@click.argument("url")
@click.option("--prefer", type=click.Choice(["atom", "rss", "json"]), default=None, help="Kind of feed to pick.")
@click.pass_obj
def discover(obj, url: str, prefer: str | None) -> None:
    """Print the feeds the page at URL links to (<link rel="alternate">), the one a source with
    this url would use marked with *; exit 1 when there are none. [fetch] allow_private,
    timeout, user agent and the HTTP(S)_PROXY environment apply."""
    from .sources.discovery import choose, discover, looks_like_html
    from .sources.remote import USER_AGENT, FetchRequest, fetch_many

    settings = obj.settings()
    f = settings.fetch
    req = FetchRequest("discover", url, timeout=f.timeout, user_agent=f.user_agent or USER_AGENT,
                       allow_private=f.allow_private, discover=False)  # fmt: skip
    results = []

    async def keep(_req, result) -> None:
        results.append(result)

    asyncio.run(fetch_many([req], 1, 1, f.max_bytes, keep))
    result = results[0]
    if result.error or result.status != 200 or not result.body:
        click.echo(f"error: {url}: {result.error or f'HTTP {result.status}'}", err=True)
        sys.exit(1)
    where = result.final_url or url
    if not looks_like_html((result.headers or {}).get("content-type"), result.body):
        click.echo(f"* feed  {where}  (the URL is a feed itself)")
        return
    links = discover(result.body, where)
    if not links:
        click.echo(f'{where}: a page without a <link rel="alternate"> feed', err=True)
        sys.exit(1)
    chosen = choose(links, prefer)
    for link in links:
        mark = "*" if link == chosen else " "
        click.echo(f"{mark} {link.kind:<4}  {link.url}" + (f"  {link.title}" if link.title else ""))
