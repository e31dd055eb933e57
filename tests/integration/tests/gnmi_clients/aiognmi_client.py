"""aiognmi (asyncio gNMI client) against gnomon's gNMI server, checked against the simulator.
Run by tests/gnmi_server.rs with the aiognmi venv scripts/setup makes (.venv/aiognmi:
aiognmi pins a grpcio that splice-gnmi's does not allow, so it has a venv of its own).

Usage: aiognmi_client.py --server-port P --device NAME=SIM_PORT [--device ...]
           --interfaces N --username U --password PW

Checks: Capabilities; Get of the counters for one target and for `*`, values between what
the device reported before and after; a STREAM on-change subscription whose counter grows;
a wrong password is UNAUTHENTICATED. aiognmi (0.1.1, and 0.2.0) has no Subscribe call, so
the STREAM goes through the gNMI stub aiognmi ships (`aiognmi.proto.gnmi`) on the client's
own grpc.aio channel and credentials, with aiognmi's path and value helpers.
Prints "PASS <check>: <detail>" per check; any failed check raises (exit code 1).
"""

import argparse
import asyncio
import time

import grpc
from aiognmi import AsyncgNMIClient
from aiognmi.proto.gnmi import gnmi_pb2
from aiognmi.proto.gnmi.gnmi_pb2_grpc import gNMIStub
from aiognmi.utils import create_gnmi_path, create_xpath, parse_typed_value

from common import COUNTER_NAMES, COUNTERS, DEADLINE, PROBE, TIMEOUT, check, passed


def server(args, password=None):
    return AsyncgNMIClient(
        host="127.0.0.1",
        port=args.server_port,
        username=args.username,
        password=password if password is not None else args.password,
        insecure=True,
    )


async def simulator_counter(port):
    """Ethernet1 in-octets straight from a simulated device (aiognmi Get; JSON_IETF, as
    aiognmi's value parser has no uint_val)."""
    async with AsyncgNMIClient("127.0.0.1", port, "u", "p", insecure=True) as gc:
        response = await gc.get(paths=["/" + PROBE], encoding="json_ietf")
    check(not response.failed, f"simulator Get failed: {response.result}")
    value = response.result["notifications"][0]["updates"][0]["val"]
    check(isinstance(value, int), f"simulator in-octets {value!r}")
    return value


def leaves_of_get(result):
    return [(u["path"], u.get("val")) for n in result["notifications"] for u in n["updates"]]


def check_counters(leaves, interfaces, targets):
    check(
        len(leaves) == 8 * interfaces * targets,
        f"expected {8 * interfaces * targets} counters, got {len(leaves)}: {leaves}",
    )
    for path, value in leaves:
        check(path.startswith("interfaces/interface[name=Ethernet"), f"unexpected path {path}")
        check(path.rsplit("/", 1)[-1] in COUNTER_NAMES, f"not a counter: {path}")
        check(isinstance(value, int), f"{path} is not an integer: {value!r}")


async def until(what, attempt):
    deadline = time.monotonic() + DEADLINE
    last = None
    while time.monotonic() < deadline:
        try:
            detail = await attempt()
        except AssertionError as error:
            last, detail = error, None
        if detail is not None:
            return detail
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not hold within {DEADLINE}s (last: {last})")


async def check_capabilities(args):
    async with server(args) as gc:
        response = await gc.get_capabilities()
    check(not response.failed, f"Capabilities failed: {response.result}")
    result = response.result
    check(result["gNMI_version"] == "0.10.0", f"version {result}")
    check({"JSON", "JSON_IETF", "PROTO"} <= set(result["supported_encodings"]), f"{result}")
    passed("aiognmi_capabilities", f"{result['gNMI_version']} {result['supported_encodings']}")


async def check_get(args, target, devices):
    floors = {name: await simulator_counter(port) for name, port in devices}

    async def attempt():
        async with server(args) as gc:
            # aiognmi names its own host:port as the target unless told otherwise.
            response = await gc.get(paths=[COUNTERS], target=target, encoding="json_ietf")
        check(not response.failed, f"Get {target} failed: {response.result}")
        leaves = leaves_of_get(response.result)
        check_counters(leaves, args.interfaces, len(devices))
        values = [v for p, v in leaves if p == PROBE]
        matched = {}
        for name, port in devices:
            now = await simulator_counter(port)
            matched[name] = next((v for v in values if floors[name] <= v <= now), None)
        if None in matched.values():
            return None
        return f"{len(leaves)} counters, in-octets per device {matched}"

    passed(f"aiognmi_get_{'all' if target == '*' else 'target'}", await until(f"Get {target}", attempt))


async def check_stream_on_change(args):
    name, port = args.devices[0]
    floor = await simulator_counter(port)
    request = gnmi_pb2.SubscribeRequest(
        subscribe=gnmi_pb2.SubscriptionList(
            prefix=create_gnmi_path(None, name),
            mode=gnmi_pb2.SubscriptionList.STREAM,
            encoding=gnmi_pb2.JSON_IETF,
            subscription=[
                gnmi_pb2.Subscription(
                    path=create_gnmi_path(COUNTERS), mode=gnmi_pb2.ON_CHANGE
                )
            ],
        )
    )

    async def requests():
        yield request
        await asyncio.Event().wait()  # keep the request side open

    values, synced, initial = [], False, 0
    async with server(args) as gc:
        call = gNMIStub(gc.channel).Subscribe(requests(), metadata=gc.credentials)
        deadline = time.monotonic() + DEADLINE
        try:
            while not synced or len(values) < 3 or values[-1] <= values[0]:
                check(time.monotonic() < deadline, f"in-octets did not grow: {values}")
                response = await asyncio.wait_for(call.read(), TIMEOUT)
                check(response is not grpc.aio.EOF, "the stream ended")
                if response.HasField("sync_response"):
                    synced = True
                    continue
                check(response.HasField("update"), f"neither update nor sync: {response}")
                check(response.update.prefix.target == name, f"target {response.update.prefix}")
                for update in response.update.update:
                    path, value = create_xpath(update.path), parse_typed_value(update.val)
                    check(path.rsplit("/", 1)[-1] in COUNTER_NAMES, f"not a counter: {path}")
                    check(isinstance(value, int), f"{path}: {value!r}")
                    if not synced:
                        initial += 1
                    if path == PROBE:
                        check(not values or value >= values[-1], f"went back: {values} {value}")
                        values.append(value)
        finally:
            call.cancel()
    check(initial == 8 * args.interfaces, f"initial dump had {initial} updates")
    now = await simulator_counter(port)
    check(floor <= values[-1] <= now, f"{values} outside the device's range {floor}..{now}")
    passed("aiognmi_stream_on_change", f"{initial} initial updates, in-octets {values[0]} .. {values[-1]}")


async def check_wrong_password(args):
    async with server(args, password=args.password + "-wrong") as gc:
        caps = await gc.get_capabilities()
        get = await gc.get(paths=[COUNTERS], target=args.devices[0][0])
    for rpc, response in (("Capabilities", caps), ("Get", get)):
        check(response.failed, f"{rpc} with a wrong password was accepted")
        code = response.raw_result.code()
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"{rpc}: {code} {response.result}")
    passed("aiognmi_wrong_password", "Capabilities and Get rejected with UNAUTHENTICATED")


async def run(args):
    await check_capabilities(args)
    await check_get(args, args.devices[0][0], args.devices[:1])
    await check_get(args, "*", args.devices)
    await check_stream_on_change(args)
    await check_wrong_password(args)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server-port", type=int, required=True)
    parser.add_argument("--device", action="append", required=True, help="NAME=SIM_PORT")
    parser.add_argument("--interfaces", type=int, required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()
    args.devices = [(d.split("=")[0], int(d.split("=")[1])) for d in args.device]
    asyncio.run(run(args))
    print("PASS aiognmi", flush=True)


if __name__ == "__main__":
    main()
