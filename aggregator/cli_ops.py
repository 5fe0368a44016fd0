"""Operator commands beside the main ones in `cli.py`: `aggregator discover URL`."""

from __future__ import annotations

import asyncio
import sys

import click


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
