"""ASGI entry for servers (``uvicorn evbilling.entrypoints.api.asgi:app``); configured by
``EVBILLING_DATABASE_URL``. ``EVBILLING_GC_FREEZE=0`` turns off the garbage-collector tuning
(``entrypoints/heap.py``)."""

import os

from evbilling.entrypoints.api.app import create_app

app = create_app(freeze_heap=os.environ.get("EVBILLING_GC_FREEZE", "1") != "0")
