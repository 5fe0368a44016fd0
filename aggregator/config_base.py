"""What every part of the config shares: its error, durations, and the strict model settings."""

from __future__ import annotations

import os
import re
from typing import Annotated

from pydantic import BeforeValidator, ConfigDict

# Pydantic looks for plugins (observability hooks) the first time a model is built, by reading the
# entry points of every installed distribution: ≈ 15 ms of every command's start-up, for hooks
# that have nothing to observe in a config read once per run. Set before any model is defined.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

SECRET_KEYS = ("auth", "headers", "cookies", "proxy")  # values never echoed in error messages


class ConfigError(Exception):
    """The config cannot be used; the message names the file and the key."""


_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_interval(value: object) -> float:
    """`"30m"`, `"2h"`, `"1d"`, `90` (seconds) → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30m', '2h' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _INTERVAL.match(str(value))
        if not m:
            raise ValueError(f"{value!r} is not a duration like '30m', '2h' or '45s'")
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


Interval = Annotated[float, BeforeValidator(parse_interval)]


# Every section: unknown keys refused, values not coerced, settings frozen once loaded. (Each
# module subclasses BaseModel with it itself, so that linters see pydantic models there.)
STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)
