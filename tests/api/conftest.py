"""Fixtures for the HTTP API tests: the checkout service on a fresh SQLite file, and a client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sagakit.service import create_app
from sagakit.settings import Settings
from tests.api.support import TOKEN

Serve = Callable[..., contextlib.AbstractAsyncContextManager[FastAPI]]


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    """A factory: the app with some settings overridden, its lifespan entered."""

    @contextlib.asynccontextmanager
    async def running(**overrides: object) -> AsyncIterator[FastAPI]:
        values: dict[str, object] = {
            "database_url": f"sqlite:///{tmp_path / 'shop.db'}",
            "admin_token": TOKEN,
            **overrides,
        }
        app = create_app(Settings.model_validate(values))
        async with app.router.lifespan_context(app):
            yield app

    return running


def client_of(app: FastAPI) -> httpx.AsyncClient:
    """A client that sends its requests straight to ``app``."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def app(serve: Serve) -> AsyncIterator[FastAPI]:
    """The running app, with the demo data loaded."""
    async with serve() as running:
        yield running


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running app."""
    async with client_of(app) as http:
        yield http
