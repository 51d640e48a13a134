"""Notification adapters: the live hub (in-process or Redis pub/sub), the notification store,
e-mail over SMTP and signed outgoing webhooks."""
