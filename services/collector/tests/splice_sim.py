"""Starts splice-gnmi's simulated OpenROADM device on 127.0.0.1:PORT (test peer only)."""
import logging
import sys
import threading
import time

logging.basicConfig(level=logging.INFO)
from splice.api.device import Device  # noqa: E402

port = int(sys.argv[1])
poll_seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
device = Device("sim://openroadm", simulate="openroadm")
device.connect()
tops = sorted({"/" + p.split("/")[1] for p in device.catalog_paths})
# The gNMI cache is only filled by this polling subscription.
feed = device.subscribe(*tops, interval=poll_seconds)
# Serve only once the first poll is in the shared cache: a ONCE request answered from an
# empty cache gets no updates, and ONCE is never asked again.
next(feed)
while not device.cached_data():
    time.sleep(0.05)
threading.Thread(target=lambda: [None for _ in feed], daemon=True).start()
device.serve(port=port, bind="127.0.0.1", heartbeat_sec=10, blocking=True)
