"""What the gNMI client scripts share: the simulator's counters and the check helpers."""

COUNTERS = "/interfaces/interface/state/counters"
COUNTER_NAMES = (
    "in-octets", "out-octets", "in-pkts", "out-pkts",
    "in-errors", "out-errors", "in-discards", "out-discards",
)
PROBE = "interfaces/interface[name=Ethernet1]/state/counters/in-octets"
TIMEOUT = 10
DEADLINE = 20


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def passed(name, detail):
    print(f"PASS {name}: {detail}", flush=True)
