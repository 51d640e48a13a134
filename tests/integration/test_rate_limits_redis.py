"""Rate limits counted in Redis (``EVBILLING_REDIS_URL``): every worker process and node shares
one count, so ``evbilling serve --workers N`` does not give a guesser N times the attempts.

Two ``FailureLimiter`` objects over one Redis stand for two processes. Needs Redis
(``EVBILLING_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/0``); skipped without it, except
under ``CI=true``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import redis

from evbilling.entrypoints.api.errors import ApiError
from evbilling.entrypoints.api.limits import FailureLimiter, promo_limiter

REDIS_URL = os.environ.get("EVBILLING_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        reason = f"Redis is unreachable at {REDIS_URL} ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires the Redis tests to run", pytrace=False)
        pytest.skip(f"{reason}; set EVBILLING_TEST_REDIS_URL, or CI=true to fail instead")
    return REDIS_URL


@pytest.fixture
def two_processes(redis_url: str) -> Iterator[tuple[FailureLimiter, FailureLimiter]]:
    """Two limiters on one Redis, under keys of this test only."""
    prefix = f"evbilling-test-{secrets.token_hex(4)}:limit:"
    limiters = (FailureLimiter("promotion code", max_failures=5, window_s=900),
                FailureLimiter("promotion code", max_failures=5, window_s=900))
    for limiter in limiters:
        limiter.use_redis(redis_url, prefix=prefix)
    yield limiters
    limiters[0].reset()


def test_failures_on_one_process_lock_the_key_on_another(two_processes):
    first, second = two_processes
    for n in range(5):
        (first if n % 2 else second).failed("op:driver", "10.0.0.1")

    with pytest.raises(ApiError) as refused:
        second.check("op:driver", "10.0.0.9")
    with pytest.raises(ApiError):
        first.check("op:other-driver", "10.0.0.1")  # the address is locked too

    assert refused.value.code == "rate_limited"
    assert 899 <= int(refused.value.headers["Retry-After"]) <= 900
    first.check("op:other-driver", "10.0.0.2")  # neither key seen: allowed


def test_four_failures_still_allow_the_fifth_attempt(two_processes):
    first, second = two_processes
    for _ in range(4):
        first.failed("op:driver", "10.0.0.1")

    second.check("op:driver", "10.0.0.1")


def test_refused_attempts_do_not_extend_a_lock(two_processes, redis_url):
    first, _ = two_processes
    for _ in range(5):
        first.failed("op:driver", "10.0.0.1")
    for _ in range(5):  # failures reported while locked are not counted
        first.failed("op:driver", "10.0.0.1")

    stored = [redis.Redis.from_url(redis_url).llen(name) for name in
              redis.Redis.from_url(redis_url).scan_iter(match=first._redis._prefix + "*")]

    assert stored == [5, 5]  # the key and the address, five failure times each


def test_keys_in_redis_do_not_reveal_e_mail_or_client_addresses(two_processes, redis_url):
    first, _ = two_processes
    first.failed("op:alice@example.com", "203.0.113.7")

    names = [n.decode() for n in
             redis.Redis.from_url(redis_url).scan_iter(match=first._redis._prefix + "*")]

    assert len(names) == 2
    assert not any("alice" in n or "203.0.113.7" in n for n in names)


def test_without_redis_each_process_counts_its_own():
    limiter = FailureLimiter("promotion code", max_failures=5, window_s=900)
    limiter.use_redis("redis://127.0.0.1:1/0")  # nothing listens there

    for _ in range(5):
        limiter.failed("op:driver", "10.0.0.1")

    with pytest.raises(ApiError) as refused:
        limiter.check("op:driver", "10.0.0.1")
    assert refused.value.code == "rate_limited"


def test_wrong_promo_codes_through_the_api_lock_the_guesser_on_every_process(
        operator, redis_url, problem):
    prefix = f"evbilling-test-{secrets.token_hex(4)}:limit:"
    promo_limiter.use_redis(redis_url, prefix=prefix)
    other_process = FailureLimiter("promotion code", max_failures=5, window_s=900)
    other_process.use_redis(redis_url, prefix=prefix)
    site_id = operator.new("tariff-assignments")["site_id"]  # a site with a tariff
    body = {"site_id": site_id, "start_at": "2025-06-10T10:00:00Z", "energy_kwh": "20",
            "charging_minutes": "60", "promo_code": "GUESS"}
    try:
        answers = [operator.admin.post("/quotes", body) for _ in range(6)]
        with pytest.raises(ApiError):
            other_process.check("anything", "testclient")  # the client address is locked
    finally:
        promo_limiter.reset()
        promo_limiter.use_redis(None)

    for answer in answers[:5]:
        problem(answer, 422, "unknown_promo_code")
    problem(answers[5], 429, "rate_limited")
