"""pygnmi against gnomon's gNMI server (the exporter's `gnmi-server`), checked against the
simulator the data came from. Run by tests/gnmi_server.rs with the venv scripts/setup makes.

Usage: pygnmi_client.py SCENARIO --server-port P --device NAME=SIM_PORT [--device ...]
           --username U --password PW [--ca F [--cert F --key F]]

Scenarios:
  all       Capabilities; Get of the counters for one target and for `*`; Subscribe ONCE,
            POLL, STREAM sample and STREAM on-change; a wrong password is UNAUTHENTICATED.
  tls       (with --ca/--cert/--key) Capabilities and Get with a client certificate; a client
            without a certificate is refused.

The first --device is the target the single-target checks use. Values are checked against
the simulator itself (a pygnmi Get on the device, no credentials): a counter the exporter
serves for a target lies between what that device reported before the request and what it
reports after it, and the simulator's devices start their counters billions apart, so
this names the device as well as the value. Every wait is bounded by a deadline.
Prints "PASS <check>: <detail>" per check; any failed check raises (exit code 1).
"""

import argparse
import time

from pygnmi.client import gNMIclient, gNMIException

from common import COUNTER_NAMES, COUNTERS, DEADLINE, PROBE, TIMEOUT, check, passed


def server(args, password=None, tls=True):
    options = dict(
        target=("127.0.0.1", args.server_port),
        gnmi_timeout=TIMEOUT,
        username=args.username,
        password=password if password is not None else args.password,
    )
    if args.ca and tls:
        options.update(path_root=args.ca, path_cert=args.cert, path_key=args.key)
    else:
        options["insecure"] = True
    return gNMIclient(**options)


def simulator_counter(port):
    """Ethernet1 in-octets straight from a simulated device."""
    with gNMIclient(target=("127.0.0.1", port), insecure=True, gnmi_timeout=TIMEOUT) as gc:
        reply = gc.get(path=[PROBE], encoding="proto")
    value = reply["notification"][0]["update"][0]["val"]
    check(isinstance(value, int), f"simulator in-octets {value!r}")
    return value


def norm(path):
    return path.lstrip("/")


def leaves_of_get(reply):
    """[(path, value)] of every update of a Get reply."""
    return [
        (norm(u["path"]), u.get("val"))
        for n in reply.get("notification", [])
        for u in n.get("update", []) or []
    ]


def leaves_of_updates(updates):
    return [(norm(u["path"]), u.get("val")) for u in updates]


def check_counters(leaves, interfaces, targets):
    """Every counter of every interface, as integers, `targets` times each."""
    check(
        len(leaves) == 8 * interfaces * targets,
        f"expected {8 * interfaces * targets} counters, got {len(leaves)}: {leaves}",
    )
    for path, value in leaves:
        check(path.startswith("interfaces/interface[name=Ethernet"), f"unexpected path {path}")
        check(path.rsplit("/", 1)[-1] in COUNTER_NAMES, f"not a counter: {path}")
        check(isinstance(value, int), f"{path} is not an integer: {value!r}")


def within(device_port, floor, value):
    """The served value lies between the device's value before and after (now)."""
    return floor <= value <= simulator_counter(device_port)


def probe_values(leaves):
    return [value for path, value in leaves if path == PROBE]


def until(what, attempt):
    """Retries `attempt` (returns a detail or None) until it succeeds or the deadline."""
    deadline = time.monotonic() + DEADLINE
    last = None
    while time.monotonic() < deadline:
        try:
            detail = attempt()
        except AssertionError as error:
            last, detail = error, None
        if detail is not None:
            return detail
        time.sleep(0.1)
    raise AssertionError(f"{what} did not hold within {DEADLINE}s (last: {last})")


def check_capabilities(args):
    with server(args) as gc:
        caps = gc.capabilities()
    check(caps["gnmi_version"] == "0.10.0", f"version {caps['gnmi_version']}")
    encodings = set(caps["supported_encodings"])
    check({"json", "json_ietf", "proto"} <= encodings, f"encodings {encodings}")
    passed("capabilities", f"version {caps['gnmi_version']}, encodings {sorted(encodings)}")


def check_get_target(args):
    name, port = args.devices[0]
    floor = simulator_counter(port)

    def attempt():
        with server(args) as gc:
            reply = gc.get(path=[COUNTERS], target=name, encoding="json_ietf")
        leaves = leaves_of_get(reply)
        check_counters(leaves, args.interfaces, 1)
        [value] = probe_values(leaves)
        if not within(port, floor, value):
            return None
        return f"{name}: {len(leaves)} counters, in-octets {value} >= simulator's {floor}"

    passed("get_target", until(f"Get {name} matching the simulator", attempt))


def check_get_all(args):
    floors = {name: simulator_counter(port) for name, port in args.devices}

    def attempt():
        with server(args) as gc:
            reply = gc.get(path=[COUNTERS], target="*", encoding="proto")
        check(
            len(reply["notification"]) >= len(args.devices),
            f"one notification per target at least: {reply}",
        )
        leaves = leaves_of_get(reply)
        check_counters(leaves, args.interfaces, len(args.devices))
        values = probe_values(leaves)
        matched = {
            name: next((v for v in values if within(port, floors[name], v)), None)
            for name, port in args.devices
        }
        if None in matched.values():
            return None
        return f"{len(leaves)} counters; in-octets per device {matched}"

    passed("get_all", until("Get * matching every simulated device", attempt))


def subscription(mode, sub_mode, interval=None):
    entry = {"path": COUNTERS, "mode": sub_mode}
    if interval:
        entry["sample_interval"] = interval
    return {"mode": mode, "encoding": "json_ietf", "subscription": [entry]}


def check_once(args):
    name, port = args.devices[0]
    floor = simulator_counter(port)

    def attempt():
        updates, synced = [], False
        with server(args) as gc:
            for message in gc.subscribe_once(
                subscribe=subscription("once", "target_defined"), target=name
            ):
                if "sync_response" in message:
                    synced = True
                elif "update" in message:
                    updates.extend(message["update"]["update"])
        check(synced, "no sync_response")
        leaves = leaves_of_updates(updates)
        check_counters(leaves, args.interfaces, 1)
        [value] = probe_values(leaves)
        if not within(port, floor, value):
            return None
        return f"{len(leaves)} updates then sync_response, in-octets {value}"

    passed("subscribe_once", until("ONCE matching the simulator", attempt))


def check_poll(args):
    name, port = args.devices[0]
    floor = simulator_counter(port)
    seen = []
    with server(args) as gc:
        poller = gc.subscribe_poll(subscribe=subscription("poll", "target_defined"), target=name)
        try:
            # The initial answer, then one per Poll until the counter moved (each answer
            # ends with sync_response: pygnmi waits for it).
            deadline = time.monotonic() + DEADLINE
            while len(seen) < 2 or seen[-1] <= seen[0]:
                check(time.monotonic() < deadline, f"in-octets did not grow across polls: {seen}")
                answer = poller.get_update(timeout=TIMEOUT)
                check(answer.get("sync_response") is True, f"no sync_response in {answer}")
                leaves = leaves_of_updates(answer["update"]["update"])
                check_counters(leaves, args.interfaces, 1)
                [value] = probe_values(leaves)
                check(not seen or value >= seen[-1], f"in-octets went back: {seen} then {value}")
                seen.append(value)
                time.sleep(0.1)
        finally:
            poller.close()
    check(floor <= seen[-1] <= simulator_counter(port), f"{seen} outside the device's range")
    passed("subscribe_poll", f"{len(seen)} answers, in-octets {seen[0]} .. {seen[-1]}")


def check_stream(args, sub_mode, interval=None):
    """Initial dump and sync, then updates of the same device whose counter grows."""
    name, port = args.devices[0]
    floor = simulator_counter(port)
    values, messages = [], 0
    with server(args) as gc:
        stream = gc.subscribe_stream(
            subscribe=subscription("stream", sub_mode, interval), target=name
        )
        try:
            initial = stream.get_update(timeout=TIMEOUT)
            check(initial.get("sync_response") is True, f"initial without sync: {initial}")
            leaves = leaves_of_updates(initial["update"]["update"])
            check_counters(leaves, args.interfaces, 1)
            values.extend(probe_values(leaves))
            deadline = time.monotonic() + DEADLINE
            while len(values) < 3 or values[-1] <= values[0]:
                check(time.monotonic() < deadline, f"in-octets did not grow: {values}")
                message = stream.get_update(timeout=TIMEOUT)
                check("update" in message, f"not an update: {message}")
                messages += 1
                for path, value in leaves_of_updates(message["update"]["update"]):
                    check(path.rsplit("/", 1)[-1] in COUNTER_NAMES, f"not a counter: {path}")
                    check(isinstance(value, int), f"{path}: {value!r}")
                    if path == PROBE:
                        check(value >= values[-1], f"in-octets went back: {values}, {value}")
                        values.append(value)
        finally:
            stream.close()
    check(floor <= values[-1] <= simulator_counter(port), f"{values} outside the device's range")
    return f"{messages} updates after sync, in-octets {values[0]} .. {values[-1]}"


def check_wrong_password(args):
    for rpc in ("capabilities", "get"):
        try:
            with server(args, password=args.password + "-wrong") as gc:
                if rpc == "get":
                    gc.get(path=[COUNTERS], target=args.devices[0][0])
                else:
                    gc.capabilities()
        except gNMIException as error:
            code = getattr(error.orig_exc, "code", lambda: None)()
            check(code is not None and code.name == "UNAUTHENTICATED", f"{rpc}: got {code}: {error}")
            continue
        raise AssertionError(f"{rpc} with a wrong password was accepted")
    passed("wrong_password", "Capabilities and Get rejected with UNAUTHENTICATED")


def scenario_all(args):
    check_capabilities(args)
    check_get_target(args)
    check_get_all(args)
    check_once(args)
    check_poll(args)
    passed("subscribe_stream_sample", check_stream(args, "sample", 200_000_000))
    passed("subscribe_stream_on_change", check_stream(args, "on_change"))
    check_wrong_password(args)


def scenario_tls(args):
    check(args.ca and args.cert and args.key, "tls needs --ca, --cert and --key")
    check_capabilities(args)
    check_get_target(args)
    # Without a client certificate the handshake is refused (pygnmi then trusts the CA only).
    try:
        with gNMIclient(
            target=("127.0.0.1", args.server_port),
            path_cert=args.ca,
            username=args.username,
            password=args.password,
            gnmi_timeout=5,
        ) as gc:
            gc.capabilities()
    except Exception as error:  # pygnmi raises its own or grpc's error, or times out
        passed("tls_without_client_certificate", f"refused: {type(error).__name__}")
        return
    raise AssertionError("a client without a certificate was served")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["all", "tls"])
    parser.add_argument("--server-port", type=int, required=True)
    parser.add_argument("--device", action="append", required=True, help="NAME=SIM_PORT")
    parser.add_argument("--interfaces", type=int, required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    args.devices = [(d.split("=")[0], int(d.split("=")[1])) for d in args.device]
    {"all": scenario_all, "tls": scenario_tls}[args.scenario](args)
    print(f"PASS {args.scenario}", flush=True)


if __name__ == "__main__":
    main()
