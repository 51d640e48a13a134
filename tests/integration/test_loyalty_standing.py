"""A driver's loyalty standing is one SQL aggregate (a session start runs it); it must say what
the domain rule ``rolling_energy_milliwh`` says, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import Engine, insert, select

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.uow import write_transaction
from evbilling.domain.promotions import UsageRecord, rolling_energy_milliwh, tier_for
from evbilling.services import catalog
from evbilling.services.demo import seed_demo

AT = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def test_the_standing_query_sums_the_window_as_the_domain_rule_does(engine: Engine):
    rng = random.Random(20261124)  # noqa: S311 - test data
    with write_transaction(engine) as conn:
        seed_demo(conn)
        operator_id = conn.execute(select(s.operators.c.id)).scalars().first()
        site = conn.execute(select(s.sites.c.id, s.sites.c.currency).where(
            s.sites.c.operator_id == operator_id)).first()
        driver_id = conn.execute(select(s.drivers.c.id).where(
            s.drivers.c.operator_id == operator_id, s.drivers.c.name == "Carol Casual")
        ).scalar_one()
        tiers = catalog.loyalty_tiers(conn, operator_id)
        window = tiers[0].window_days
        since = AT - dt.timedelta(days=window)
        before = catalog.loyalty_standing(conn, operator_id, driver_id, AT, tiers)
        # the edges of the window, just outside them, and random instants; some exported
        # energy (negative: counts 0)
        instants = [since, since - dt.timedelta(milliseconds=1), AT,
                    AT - dt.timedelta(milliseconds=1)] + [
            since + dt.timedelta(seconds=rng.randint(-86_400, window * 86_400 + 86_400))
            for _ in range(60)]
        rows = []
        for n, started_at in enumerate(instants):
            energy = rng.choice([rng.randint(0, 80_000_000), -rng.randint(1, 5_000_000)])
            rows.append({"id": f"ses_loyalty_{n}", "operator_id": operator_id,
                         "site_id": site.id, "driver_id": driver_id, "started_at": started_at,
                         "energy_milliwh": energy, "periods": [], "currency": site.currency,
                         "status": "completed", "created_at": AT})
        conn.execute(insert(s.charging_sessions), rows)
        after = catalog.loyalty_standing(conn, operator_id, driver_id, AT, tiers)
    assert before is not None and after is not None
    added = rolling_energy_milliwh(
        (UsageRecord(r["started_at"], r["energy_milliwh"]) for r in rows), AT, window)
    assert added > 0
    assert after.energy_milliwh == before.energy_milliwh + added
    assert after.tier == tier_for(after.energy_milliwh, tiers)
