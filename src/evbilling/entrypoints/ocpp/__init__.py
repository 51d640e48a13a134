"""The OCPP central system: chargers connect over WebSocket (OCPP 1.6J or 2.0.1) to
``/ocpp/{charge_point_id}``; their messages become ``ChargingPort`` commands, and
``ConnectionRegistry`` sends them ours (``ChargerCommands``). See docs/ocpp.md."""

from evbilling.entrypoints.ocpp.registry import ConnectionRegistry
from evbilling.entrypoints.ocpp.server import GatewaySettings, OcppGateway, mount_ocpp

__all__ = ["ConnectionRegistry", "GatewaySettings", "OcppGateway", "mount_ocpp"]
