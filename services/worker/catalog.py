"""Kept for task modules written against the old path: use `services.tasks` instead."""

from services.tasks import *  # noqa: F403
