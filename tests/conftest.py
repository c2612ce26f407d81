"""Fixtures for every test directory: a real redis-server (`redis_server`, `redis_url`)."""

pytest_plugins = ["tests.redis_server"]
