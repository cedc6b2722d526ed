"""Side effects of steps, one module per kind; ``worker.py`` builds them with their clients injected."""

from activities.http import HttpActivities
from activities.notify import NotificationActivities

__all__ = ["HttpActivities", "NotificationActivities"]
