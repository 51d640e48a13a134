"""Pure domain model: no I/O, no frameworks. Every money rule lives here."""
