"""Charger simulator: realistic sessions (``curves``), OCPP 1.6J / 2.0.1 clients over real sockets
(``client``) and a runner for many chargers with time compression (``runner``)."""
