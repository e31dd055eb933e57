"""Starts splice-gnmi's simulated OpenROADM device on 127.0.0.1:PORT (test peer only).

Arguments: PORT [POLL_SECONDS]. Serving starts once the cache holds data under
/org-openroadm-device, the path the tests ask with ONCE.
"""
import logging
import sys
import threading
import time

logging.basicConfig(level=logging.INFO)
from splice.api.device import Device  # noqa: E402
from splice.pathing import is_path_prefix, normalize_path  # noqa: E402

port = int(sys.argv[1])
poll_seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
ready_path = normalize_path("/org-openroadm-device")
device = Device("sim://openroadm", simulate="openroadm")
device.connect()
tops = sorted({"/" + p.split("/")[1] for p in device.catalog_paths})
# The gNMI cache is only filled by this polling subscription.
feed = device.subscribe(*tops, interval=poll_seconds)
# Serve only once the polls have put data under the asked path in the shared cache: a ONCE
# request answered before gets no updates, and ONCE is never asked again. (Data under other
# top-level paths can arrive first, so a non-empty cache is not enough.)
threading.Thread(target=lambda: [None for _ in feed], daemon=True).start()


def ready():
    return any(
        is_path_prefix(normalize_path(u.get("path", "")), ready_path)
        for u in device.cached_data()
    )


while not ready():
    time.sleep(0.05)
device.serve(port=port, bind="127.0.0.1", heartbeat_sec=10, blocking=True)
