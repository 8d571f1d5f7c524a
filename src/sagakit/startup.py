"""Faults at start: a setting or the environment is wrong, said in one line that names the
setting and what to do, and exit code 2 (``--debug`` adds the traceback)."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from sagakit.errors import StoreError
from sagakit.settings import Settings

#: The exit code of a start refused for a setting or the environment.
EXIT_SETTINGS: Final = 2
DATABASE_SETTING: Final = "--database-url / SAGAKIT_DATABASE_URL"


class StartupFault(Exception):
    """A start refused: ``message`` is the one line printed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _redacted(url: str) -> str:
    try:
        return redacted(url)
    except ValueError:
        return "<unreadable URL>"


def database_fault(settings: Settings, exc: BaseException) -> StartupFault:
    """The one line for a database that cannot be opened, created or migrated."""
    url = _redacted(settings.database_url)
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if url.startswith("sqlite:"):
        advice = "make sure its directory exists and is writable by this user"
    elif url.startswith(("postgresql:", "postgres:")):
        advice = "check that the server runs, the database exists and the user may connect"
    else:
        advice = "use sqlite:///path or postgresql://user@host/db"
    return StartupFault(f"cannot open the database {url} ({DATABASE_SETTING}): {reason}; {advice}")


def port_fault(settings: Settings, exc: OSError) -> StartupFault:
    """The one line for a port this process cannot listen on."""
    reason = exc.strerror or str(exc)
    return StartupFault(
        f"cannot listen on {settings.host}:{settings.port} (--host/--port, SAGAKIT_HOST/"
        f"SAGAKIT_PORT): {reason}; stop the process using it or choose another port"
    )


async def _open_and_close(settings: Settings) -> None:
    from sagakit.store import open_store

    store = await open_store(settings.database_url)
    await store.close()


def check_database(settings: Settings) -> None:
    """Open the store (creating and migrating it) and close it; :class:`StartupFault` if not."""
    try:
        asyncio.run(_open_and_close(settings))
    except (StoreError, sqlite3.Error, OSError, ValueError) as exc:
        raise database_fault(settings, exc) from exc
