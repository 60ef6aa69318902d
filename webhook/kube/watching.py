"""List, then watch, then relist on any interruption: the loop behind every watch-fed cache."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubewrit.webhook.kube import api as kube_api

log = logging.getLogger(__name__)

Items = list[dict[str, Any]]


def follow(
    api: client.ApiClient,
    plural: str,
    stop: threading.Event,
    on_list: Callable[[Items], None],
    on_event: Callable[[str, dict[str, Any]], None],
) -> None:
    """Keep a cache of every `plural` object in the cluster current until `stop` is set."""
    list_all = functools.partial(
        kube_api.custom(api).list_cluster_custom_object, kube_api.GROUP, kube_api.VERSION, plural
    )
    while not stop.is_set():
        try:
            listing = list_all()
            on_list(listing.get("items", []))
            stream = watch.Watch()
            for event in stream.stream(
                list_all,
                resource_version=listing["metadata"]["resourceVersion"],
                timeout_seconds=300,
            ):
                if stop.is_set():
                    stream.stop()
                    break
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    on_event(event["type"], event["object"])
        except Exception as exc:
            log.warning("%s watch interrupted (%s); relisting", plural, exc)
            time.sleep(1.0)
