"""evbilling: billing and payments for EV charging operators."""

__version__ = "0.1.0"
