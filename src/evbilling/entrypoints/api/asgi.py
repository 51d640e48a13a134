"""ASGI entry for servers (``uvicorn evbilling.entrypoints.api.asgi:app``); configured by
``EVBILLING_DATABASE_URL``."""

from evbilling.entrypoints.api.app import create_app

app = create_app()
