"""ASGI entry for servers (``uvicorn evbilling.entrypoints.api.asgi:app``); configured by
``EVBILLING_DATABASE_URL``. ``EVBILLING_GC_FREEZE=0`` turns off the garbage-collector tuning
(``entrypoints/heap.py``); ``EVBILLING_GC_FREEZE_EVERY_S`` sets how often it freezes."""

import os

from evbilling.entrypoints.api.app import create_app

_every = os.environ.get("EVBILLING_GC_FREEZE_EVERY_S")
app = create_app(freeze_heap=os.environ.get("EVBILLING_GC_FREEZE", "1") != "0",
                 freeze_every_s=None if _every is None else float(_every))
