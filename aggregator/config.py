"""config.toml → frozen, typed settings.

Every error names the config file and the offending key, so an operator can fix it
without reading code. Relative paths (article folders, the output folder, a SQLite
file) resolve against the folder that holds the config file, not the working directory.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .config_base import SECRET_KEYS, STRICT, ConfigError, Interval, parse_interval  # noqa: F401  (the config's API)
from .config_runtime import AlertSettings, RetentionSettings, ServeSettings, Tuning, WorkersSettings

if TYPE_CHECKING:
    from .cleaning import Limits

DEFAULT_CONFIG = "config.toml"
FORMATS = ("atom", "rss", "json")


class _Strict(BaseModel):
    model_config = STRICT


class DatabaseSettings(_Strict):
    url: str = "sqlite:///db/aggregator.sqlite3"
    # SQLite page cache of the main connection, MB: memory the process fills as the store grows
    # (a 100,000-file cold update peaked at 362 MB with 32, 398 MB with 64, no faster); a store
    # past ~100,000 entries dedups a little faster with more of its band index in it (about 1 MB
    # per 2,000 entries; see docs/benchmarks.md).
    cache_mb: int = Field(default=32, ge=2, le=65_536)


class OutputSettings(_Strict):
    dir: Path = Path("feeds")
    base_url: str = "http://127.0.0.1:8080/"
    title: str = "Aggregator"
    description: str = "Articles and feeds, aggregated and deduplicated."
    language: str = "zh-CN"
    author: str = "aggregator"
    max_items: int = Field(default=50, ge=1, le=10_000)
    formats: list[Literal["atom", "rss", "json"]] = ["atom", "rss"]
    # feed presentation
    icon: str | None = None  # square image URL (Atom icon, JSON Feed icon)
    logo: str | None = None  # 2:1 image URL (Atom logo, RSS image); defaults to icon
    ttl: int = Field(default=60, ge=1, le=100_000)  # RSS <ttl>, minutes
    summary_only: bool = False  # publish summaries, not full content
    summary_chars: int | None = Field(default=None, ge=20, le=4000)  # cut published summaries to this length
    stylesheet: bool = True  # ship feed.xsl and reference it from Atom/RSS feeds

    @field_validator("base_url")
    @classmethod
    def _absolute_base(cls, v: str) -> str:
        if not re.match(r"^https?://[^/]+", v):
            raise ValueError("must be an absolute http(s) URL")
        return v if v.endswith("/") else v + "/"

    @field_validator("dir", mode="before")
    @classmethod
    def _path(cls, v: object) -> object:
        return Path(v) if isinstance(v, str) else v


class FetchSettings(_Strict):
    every: Interval = 1800.0
    timeout: Interval = 20.0
    concurrency: int = Field(default=16, ge=1, le=1000)
    per_host: int = Field(default=2, ge=1, le=100)
    max_bytes: int = Field(default=10_000_000, ge=1024)
    user_agent: str | None = None
    # Loopback, private, link-local (cloud metadata), CGNAT and ULA addresses are refused unless
    # allowed: a feed URL or a redirect must not make us fetch from inside the network.
    allow_private: bool = False
    parse_timeout: Interval = 30.0  # wall-clock limit of parsing one feed document


class LimitsSettings(_Strict):
    """`[limits]`: what one feed entry or fetch may make us store (see `cleaning.Limits`)."""

    title_chars: int = Field(default=1000, ge=10)
    author_chars: int = Field(default=200, ge=10)
    authors_per_entry: int = Field(default=20, ge=1)
    url_chars: int = Field(default=2048, ge=64)
    summary_chars: int = Field(default=4000, ge=10)
    content_bytes: int = Field(default=2_000_000, ge=1024)
    categories_per_entry: int = Field(default=20, ge=0)
    category_chars: int = Field(default=64, ge=1)
    new_categories_per_day: int = Field(default=100, ge=0)
    entries_per_fetch: int = Field(default=1000, ge=1)


class SourceLimits(_Strict):
    """A source's own `limits = { ... }`: any key of `[limits]`, overriding it for that source."""

    title_chars: int | None = Field(default=None, ge=10)
    author_chars: int | None = Field(default=None, ge=10)
    authors_per_entry: int | None = Field(default=None, ge=1)
    url_chars: int | None = Field(default=None, ge=64)
    summary_chars: int | None = Field(default=None, ge=10)
    content_bytes: int | None = Field(default=None, ge=1024)
    categories_per_entry: int | None = Field(default=None, ge=0)
    category_chars: int | None = Field(default=None, ge=1)
    new_categories_per_day: int | None = Field(default=None, ge=0)
    entries_per_fetch: int | None = Field(default=None, ge=1)


class DedupSettings(_Strict):
    enabled: bool = True
    near_threshold: float = Field(default=0.6, gt=0.0, le=1.0)  # measured: benchmarks/dedup_quality.py
    tracking_params: list[str] = []
    source_priority: list[str] = []


# ---- per-category options and WebSub


class CategorySettings(_Strict):
    """`[categories] "name" = "canonical"` (an alias) or a `[categories."name"]` table of options."""

    alias_of: str | None = None
    title: str | None = None
    description: str | None = None
    icon: str | None = None
    logo: str | None = None
    max_items: int | None = Field(default=None, ge=1, le=10_000)
    formats: list[Literal["atom", "rss", "json"]] | None = None
    summary_only: bool | None = None  # None: [output] summary_only
    summary_chars: int | None = Field(default=None, ge=20, le=4000)  # None: [output] summary_chars
    include: list[str] = []  # publish only entries whose title, summary or tags hold one of these
    exclude: list[str] = []  # never publish entries whose title, summary or tags hold one of these

    @model_validator(mode="after")
    def _alias_alone(self) -> CategorySettings:
        if self.alias_of is not None and self.model_fields_set - {"alias_of"}:
            raise ValueError("an alias (alias_of) takes no other options; set them on the canonical category")
        return self


def _alias_table(v: object) -> object:
    return {"alias_of": v} if isinstance(v, str) else v


class WebSubSettings(_Strict):
    hub: str | None = None  # the hub to ping after a feed changes
    timeout: Interval = 10.0

    @field_validator("hub")
    @classmethod
    def _absolute_hub(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/]+", v):
            raise ValueError("must be an absolute http(s) URL")
        return v


def _feed_categories(v: object) -> object:
    return {True: "keep", False: "ignore"}.get(v, v) if isinstance(v, bool) else v


class SourceSettings(_Strict):
    name: str = Field(min_length=1)
    path: Path | None = None
    url: str | None = None
    opml: Path | None = None
    categories: list[str] = []
    timezone: str = "Asia/Shanghai"
    enabled: bool = True
    every: Interval | None = None
    timeout: Interval | None = None
    user_agent: str | None = None
    max_file_bytes: int = Field(default=5_000_000, ge=1)
    allow_private: bool | None = None  # None: [fetch] allow_private
    # The feed's own <category> terms: "map" keeps those the config names ([categories]), "keep"
    # all, "ignore" none (true/false, the old spelling, mean keep/ignore). See docs/rules.md.
    feed_categories: Annotated[Literal["keep", "map", "ignore"], BeforeValidator(_feed_categories)] = "map"
    full_text: bool | str = False  # fetch each new entry's page: true (extractor) or a CSS selector
    limits: SourceLimits = SourceLimits()
    # article folders: what the site layout takes, and the source's say over it
    drafts: bool = False  # publish drafts (`_drafts/`, `draft: true`, `published: false`)
    future: bool = False  # publish posts dated in the future now, instead of when their date comes
    include: list[str] = []  # gitignore-style patterns, relative to `path`: only matching files
    exclude: list[str] = []  # gitignore-style patterns: matching files and folders are left out
    follow_symlinks: bool = False  # follow symbolic links (out of the folder too)
    link_keys: list[str] = []  # more front-matter keys holding the original URL (tried first)
    image_keys: list[str] = []  # more front-matter keys holding the image (tried first)
    # remote sources: what some servers need to answer (see `sources.httpopts`)
    headers: dict[str, str] = {}
    cookies: dict[str, str] = {}
    auth: str | None = None  # "user:password", sent as basic auth; never logged
    auth_env: str | None = None  # name of an environment variable holding "user:password"
    proxy: str | None = None  # http://, https:// or socks5:// proxy; None: HTTP(S)_PROXY / NO_PROXY
    verify_tls: bool = True
    prefer: Literal["atom", "rss", "json"] | None = None  # which feed a page's discovery picks

    @field_validator("full_text")
    @classmethod
    def _full_text(cls, v: bool | str) -> bool | str:
        from .rules import selector_problem

        problem = selector_problem(v) if isinstance(v, str) else None
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, str]) -> dict[str, str]:
        from .sources.httpopts import header_problem

        for name, value in v.items():
            why = header_problem(name, value)
            if why:
                raise ValueError(why)
        return v

    @field_validator("auth")
    @classmethod
    def _user_password(cls, v: str | None) -> str | None:
        if v is not None and ":" not in v:
            raise ValueError("must be 'user:password'")  # the value is not echoed: it is a secret
        return v

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^(https?|socks5h?|socks4)://[^/\s]+", v.strip()):
            raise ValueError("must be an http://, https:// or socks5:// URL")
        return v.strip() if v is not None else v

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        import pathspec

        try:
            pathspec.GitIgnoreSpec.from_lines(v)
        except (ValueError, TypeError) as e:
            raise ValueError(f"not a gitignore-style pattern: {e}") from None
        return v

    @field_validator("path", "opml", mode="before")
    @classmethod
    def _path(cls, v: object) -> object:
        return Path(v) if isinstance(v, str) else v

    # a feed URL must be absolute http(s), so a typo fails at load time
    @field_validator("url")
    @classmethod
    def _feed_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v.strip()):
            raise ValueError("must be an absolute http(s) URL")
        return v.strip() if v is not None else v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @model_validator(mode="after")
    def _one_location(self) -> SourceSettings:
        given = [k for k in ("path", "url", "opml") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a source needs exactly one of 'path', 'url' or 'opml'")
        folder_only = ("drafts", "future", "include", "exclude", "follow_symlinks", "link_keys", "image_keys")
        misplaced = [k for k in folder_only if k in self.model_fields_set] if self.path is None else []
        if misplaced:
            raise ValueError(f"{misplaced[0]!r} applies to article folders ('path') only")
        remote_only = ("headers", "cookies", "auth", "auth_env", "proxy", "verify_tls", "prefer", "full_text")
        misplaced = [k for k in remote_only if k in self.model_fields_set] if self.path is not None else []
        if misplaced:
            raise ValueError(f"{misplaced[0]!r} applies to remote sources ('url' or 'opml') only")
        if self.auth is not None and self.auth_env is not None:
            raise ValueError("give 'auth' or 'auth_env', not both")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# ---- serving the output folder and pruning old entries


class Settings(_Strict):
    database: DatabaseSettings = DatabaseSettings()
    output: OutputSettings = OutputSettings()
    fetch: FetchSettings = FetchSettings()
    dedup: DedupSettings = DedupSettings()
    categories: dict[str, Annotated[CategorySettings, BeforeValidator(_alias_table)]] = {}
    websub: WebSubSettings = WebSubSettings()
    serve: ServeSettings = ServeSettings()
    retention: RetentionSettings = RetentionSettings()
    limits: LimitsSettings = LimitsSettings()
    alerts: AlertSettings = AlertSettings()
    workers: WorkersSettings = WorkersSettings()
    sources: list[SourceSettings] = []
    rules: list[dict[str, Any]] = []  # `[[rules]]`, checked by `rules.compile_rules` in load_config
    # Where the file came from; set by load_config, not by the TOML.
    config_path: Path = Path(DEFAULT_CONFIG)
    tuning: Tuning = Tuning()  # not from the TOML either (see Tuning)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        seen: set[str] = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"two sources are named {s.name!r}")
            seen.add(s.name)
        return self

    def canonical_category(self, name: str) -> str:
        name = " ".join(name.split())
        return self.category_aliases.get(name, name)

    @property
    def category_aliases(self) -> dict[str, str]:
        """name as written (whitespace collapsed) → canonical name, for the sources."""
        return {" ".join(k.split()): c.alias_of for k, c in self.categories.items() if c.alias_of is not None}

    def category_options(self, name: str) -> CategorySettings:
        """The options of a canonical category (defaults when it has no table)."""
        found = self.categories.get(name)
        return found if found is not None and found.alias_of is None else CategorySettings()

    def limits_for(self, source: SourceSettings | None = None) -> Limits:
        """`[limits]` with the source's own overrides applied."""
        from .cleaning import Limits

        values = self.limits.model_dump()
        if source is not None:
            values |= {k: v for k, v in source.limits.model_dump().items() if v is not None}
        return Limits(**values)

    def allow_private(self, source: SourceSettings) -> bool:
        return self.fetch.allow_private if source.allow_private is None else source.allow_private

    @property
    def file_sources(self) -> tuple[SourceSettings, ...]:
        return tuple(s for s in self.sources if s.path is not None and s.enabled)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in FORMATS or part.startswith(("function-", "literal[")):
            continue
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _resolve(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path)


def _resolve_db_url(url: str, base: Path) -> str:
    """Make a relative SQLite path relative to the config folder."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        db = Path(u.database)
        if not db.is_absolute():
            u = u.set(database=str(base / db))
    return u.render_as_string(hide_password=False)


def load_config(path: str | Path = DEFAULT_CONFIG) -> Settings:
    """Read, validate and resolve a config file, raising ConfigError on any problem."""
    path = Path(path)
    raw = _read_toml(path)
    raw.pop("config_path", None)
    if "tuning" in raw:  # a field of Settings, but not a key of the file
        raise ConfigError(f"{path}: tuning: unknown key")
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        key = _loc(first["loc"])
        value = first.get("input")
        shown = f" (got {value!r})" if not isinstance(value, dict | list) else ""
        if any(part in SECRET_KEYS for part in first["loc"]) or "alerts" in first["loc"]:
            shown = ""  # a password or a token must not land in a log through an error message
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ConfigError(f"{path}: {key}: {first['msg']}{shown}{more}") from None

    # A misspelt name would silently rank nothing. Sources from an OPML file are named only
    # when the file is read, so with one configured the names cannot be checked here.
    if not any(s.opml is not None for s in settings.sources):
        names = {s.name for s in settings.sources}
        unknown = [n for n in settings.dedup.source_priority if n not in names]
        if unknown:
            listed = ", ".join(map(repr, unknown))
            raise ConfigError(f"{path}: dedup.source_priority: no configured source is named {listed}")

    if settings.rules:  # a rule that cannot be used stops the load, named (`rules[4].when.colour: …`)
        from .rules import config_problem

        problem = config_problem(settings)
        if problem:
            raise ConfigError(f"{path}: {problem}")
    return _resolved(settings, path)


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def _resolved(settings: Settings, path: Path) -> Settings:
    """`settings` with every path made absolute against the config file's folder (the sources'
    folders and OPML files must exist), and the config's own path."""
    base = path.resolve().parent
    sources = []
    for i, s in enumerate(settings.sources):
        changes: dict[str, object] = {}
        for key in ("path", "opml"):
            p = getattr(s, key)
            if p is not None:
                p = _resolve(p, base)
                if not p.exists():
                    raise ConfigError(f"{path}: sources[{i}].{key}: {p} does not exist")
                changes[key] = p
        sources.append(s.model_copy(update=changes))
    return settings.model_copy(
        update={
            "sources": sources,
            "output": settings.output.model_copy(update={"dir": _resolve(settings.output.dir, base)}),
            "database": settings.database.model_copy(update={"url": _resolve_db_url(settings.database.url, base)}),
            "config_path": path.resolve(),
        }
    )
