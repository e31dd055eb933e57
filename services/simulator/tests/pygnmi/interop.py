"""pygnmi against the gnomon simulator: one scenario per run, exit code 0 when it holds.

Usage: interop.py SCENARIO --port P [--tls-cert FILE] [--username U --password P]

Scenarios: capabilities, get, once, poll, stream, on_change, wrong_password.
Prints "PASS <scenario>: <detail>" on success; any failed check raises (exit code 1).
"""

import argparse
import sys
import time

from pygnmi.client import gNMIclient, gNMIException

COUNTERS = "/interfaces/interface[name=Ethernet1]/state/counters"
COUNTER_NAMES = [
    "in-octets", "out-octets", "in-pkts", "out-pkts",
    "in-errors", "out-errors", "in-discards", "out-discards",
]
TIMEOUT = 10


def client(args, password=None):
    options = dict(target=("127.0.0.1", args.port), gnmi_timeout=TIMEOUT)
    if args.tls_cert:
        options["path_cert"] = args.tls_cert
    else:
        options["insecure"] = True
    if args.username:
        options["username"] = args.username
        options["password"] = password if password is not None else args.password
    return gNMIclient(**options)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def leaf_values(updates):
    """{path: value} from pygnmi's rendered updates."""
    return {u["path"]: u.get("val") for u in updates}


def counters_of(notification_update):
    """The eight Ethernet1 counters from a (merged) subscribe update, as ints."""
    values = leaf_values(notification_update["update"])
    found = {}
    for name in COUNTER_NAMES:
        key = f"interfaces/interface[name=Ethernet1]/state/counters/{name}"
        check(key in values, f"{key} missing from {sorted(values)}")
        check(isinstance(values[key], int), f"{key} is not an integer: {values[key]!r}")
        found[name] = values[key]
    return found


def scenario_capabilities(args):
    with client(args) as gc:
        caps = gc.capabilities()
    check(caps["gnmi_version"] == "0.10.0", f"version {caps['gnmi_version']}")
    encodings = set(caps["supported_encodings"])
    check({"json", "json_ietf", "proto"} <= encodings, f"encodings {encodings}")
    names = {m["name"] for m in caps["supported_models"]}
    check("openconfig-interfaces" in names, f"models {names}")
    return f"version {caps['gnmi_version']}, encodings {sorted(encodings)}"


def scenario_get(args):
    with client(args) as gc:
        reply = gc.get(path=[COUNTERS, "/system/state/hostname"], encoding="json_ietf")
    notifications = reply["notification"]
    check(len(notifications) == 2, f"expected 2 notifications: {reply}")
    check(all(n["timestamp"] > 0 for n in notifications), "zero timestamp")
    counters = notifications[0]["update"][0]["val"]
    for name in COUNTER_NAMES:
        check(isinstance(counters.get(name), int), f"{name} missing in {counters}")
    hostname = notifications[1]["update"][0]["val"]
    check(hostname.startswith("sim-"), f"hostname {hostname!r}")
    return f"{hostname}: in-octets {counters['in-octets']}"


def scenario_once(args):
    request = {
        "mode": "once",
        "encoding": "json_ietf",
        "subscription": [{"path": COUNTERS, "mode": "sample"}],
    }
    updates, synced = [], False
    with client(args) as gc:
        for message in gc.subscribe_once(subscribe=request):
            if "sync_response" in message:
                synced = True
            elif "update" in message:
                updates.extend(message["update"]["update"])
    check(synced, "no sync_response")
    counters = counters_of({"update": updates})
    return f"{len(updates)} updates, in-octets {counters['in-octets']}"


def scenario_poll(args):
    request = {
        "mode": "poll",
        "encoding": "json_ietf",
        "subscription": [{"path": COUNTERS, "mode": "sample"}],
    }
    seen = []
    with client(args) as gc:
        poller = gc.subscribe_poll(subscribe=request)
        try:
            # The first answer is the initial snapshot, then one per Poll; each must end
            # with sync_response (pygnmi waits for it).
            for _ in range(3):
                answer = poller.get_update(timeout=TIMEOUT)
                check(answer.get("sync_response") is True, f"no sync_response in {answer}")
                seen.append(counters_of(answer["update"])["in-octets"])
                time.sleep(0.3)
        finally:
            poller.close()
    check(seen[0] < seen[-1], f"in-octets did not grow across polls: {seen}")
    return f"in-octets across initial + 2 polls: {seen}"


def scenario_stream(args):
    request = {
        "mode": "stream",
        "encoding": "json_ietf",
        "subscription": [
            {"path": COUNTERS, "mode": "sample", "sample_interval": 1_000_000_000},
        ],
    }
    samples, stamps = [], []
    with client(args) as gc:
        stream = gc.subscribe_stream(subscribe=request)
        try:
            initial = stream.get_update(timeout=TIMEOUT)
            check(initial.get("sync_response") is True, f"initial without sync: {initial}")
            samples.append(counters_of(initial["update"])["in-octets"])
            for _ in range(3):
                message = stream.get_update(timeout=TIMEOUT)
                check("update" in message, f"not an update: {message}")
                stamps.append(message["update"]["timestamp"])
                samples.append(counters_of(message["update"])["in-octets"])
        finally:
            stream.close()
    check(all(a < b for a, b in zip(samples, samples[1:])), f"not growing: {samples}")
    gaps = [(b - a) / 1e9 for a, b in zip(stamps, stamps[1:])]
    check(all(0.5 < gap < 2.0 for gap in gaps), f"samples not ~1 s apart: {gaps}")
    return f"in-octets {samples}, gaps {['%.2f' % g for g in gaps]} s"


def scenario_on_change(args):
    request = {
        "mode": "stream",
        "encoding": "json_ietf",
        "subscription": [
            {"path": "/interfaces/interface/state/oper-status", "mode": "on_change"},
        ],
    }
    flapping = "interfaces/interface[name=Ethernet1]/state/oper-status"
    changes = []
    with client(args) as gc:
        stream = gc.subscribe_stream(subscribe=request)
        try:
            initial = leaf_values(stream.get_update(timeout=TIMEOUT)["update"]["update"])
            check(flapping in initial, f"no initial oper-status: {initial}")
            check(all(v in ("UP", "DOWN") for v in initial.values()), f"bad states {initial}")
            last = initial[flapping]
            for _ in range(2):
                message = stream.get_update(timeout=TIMEOUT)
                values = leaf_values(message["update"]["update"])
                check(list(values) == [flapping], f"update for other leaves: {values}")
                check(values[flapping] != last, f"update without change: {values}")
                last = values[flapping]
                changes.append(last)
        finally:
            stream.close()
    return f"Ethernet1 oper-status changes: {changes}"


def scenario_wrong_password(args):
    check(args.username, "wrong_password needs --username/--password")
    try:
        with client(args, password=args.password + "-wrong") as gc:
            gc.capabilities()
    except gNMIException as error:
        code = getattr(error.orig_exc, "code", lambda: None)()
        check(code is not None and code.name == "UNAUTHENTICATED", f"got {code}: {error}")
        return f"rejected with {code.name}"
    raise AssertionError("a wrong password was accepted")


SCENARIOS = {
    name[len("scenario_"):]: function
    for name, function in globals().items()
    if name.startswith("scenario_")
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--username")
    parser.add_argument("--password")
    args = parser.parse_args()
    detail = SCENARIOS[args.scenario](args)
    print(f"PASS {args.scenario}: {detail}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
