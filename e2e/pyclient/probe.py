#!/usr/bin/python3
"""Command probe is the gRPC C-core twin of `nodexds-echo probe`: a third,
independent xDS client stack (Python's grpcio, which is C-core underneath,
like C++, Ruby, PHP and C#) for the end-to-end tests.

    GRPC_XDS_BOOTSTRAP_CONFIG='{...}' PYTHONPATH=STUBS python3 probe.py \\
        [--interval 50ms] [--timeout 1s] [--header name:value]... [--xds-creds] xds:///be1:8080
    GRPC_XDS_BOOTSTRAP_CONFIG='{...}' python3 probe.py serve --xds --listen IP:PORT --name NAME

`probe.py serve` is the twin of `nodexds-echo serve` (server.py, which needs
no stubs). The probe alone may also be written `probe.py probe [flags] TARGET`.

STUBS holds echo_pb2.py and echo_pb2_grpc.py, generated from echo.proto by
protoc and grpc_python_plugin (the e2e suite does it once per run). It calls
/nodexds.echo.Echo/Hello once per interval, one RPC in flight at a time, and
prints one line per RPC to stdout, exactly like the Go probe
(internal/echo.Probe):

    ok <backend-name> <latency-microseconds>
    err <GoCodeName> "<message>"

With --xds-creds the channel uses grpc.xds_channel_credentials with an
insecure fallback, as `nodexds-echo probe -xds-creds` does: mTLS when the
agent's Cluster carries TLS settings, plaintext otherwise. (grpcio's default
fallback is TLS with the system roots, so it is passed explicitly.)

The bootstrap comes from GRPC_XDS_BOOTSTRAP (a file) or
GRPC_XDS_BOOTSTRAP_CONFIG (the JSON itself), read by C-core. SIGINT and
SIGTERM stop it at once with exit status 0; the RPC in flight is not
reported, as in the Go probe.
"""

import os
import re
import signal
import sys
import time

PROG = "nodexds-py-probe"

# Go's codes.Code.String() names, indexed by code.
CODE_NAMES = [
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
    "Unauthenticated",
]

PREFIX = "Hello from "


def stop(*_):
    # Lines are flushed as they are written; exit without waiting for
    # C-core's threads (a clean shutdown of an xDS channel can take seconds).
    os._exit(0)


def code_name(code):
    """code is a grpc.StatusCode; its value is (int, name)."""
    n = code.value[0] if code is not None else 2
    return CODE_NAMES[n] if 0 <= n < len(CODE_NAMES) else "Code(%d)" % n


def go_quote(s):
    """Go's strconv.Quote (what %q prints), for the ASCII-and-printable
    messages gRPC produces; other runes are escaped as Go would."""
    out = ['"']
    for ch in s:
        r = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= r < 0x7F or (r > 0x7F and ch.isprintable()):
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
                        "\r": "\\r", "\t": "\\t", "\v": "\\v"}[ch])
        elif r < 0x20 or r == 0x7F:
            out.append("\\x%02x" % r)
        elif 0xD800 <= r <= 0xDFFF:
            out.append("\\ufffd")
        elif r < 0x10000:
            out.append("\\u%04x" % r)
        else:
            out.append("\\U%08x" % r)
    out.append('"')
    return "".join(out)


UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(s):
    """A Go time.ParseDuration string ("50ms", "1.5s", "1m30s") in seconds."""
    if s == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(s):
        m = DURATION.match(s, pos)
        if not m:
            raise ValueError("invalid duration %s" % go_quote(s))
        total += float(m.group(1)) * UNIT_S[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError("invalid duration %s" % go_quote(s))
    return total


def usage(msg, code=2):
    if msg:
        sys.stderr.write("%s: %s\n" % (PROG, msg))
    sys.stderr.write("usage: probe.py [probe] [--interval 50ms] [--timeout 1s] [--header name:value]... [--xds-creds] xds:///NAME\n"
                     "       probe.py serve [--xds] [--listen IP:PORT] [--name NAME] [--not-serving]\n")
    sys.exit(code)


def parse_args(argv):
    opts = {"interval": 0.05, "timeout": 1.0, "headers": [], "xds_creds": False}
    rest = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            rest += argv[i:]
            break
        if not a.startswith("-") or a == "-":
            rest.append(a)
            continue
        # Like Go's flag package: -name or --name, value next or after '='.
        name, eq, val = a.lstrip("-").partition("=")
        if name == "xds-creds":
            # A Go boolean flag: alone it is true; -xds-creds=v parses v.
            if not eq or val in ("1", "t", "T", "true", "TRUE", "True"):
                opts["xds_creds"] = True
            elif val in ("0", "f", "F", "false", "FALSE", "False"):
                opts["xds_creds"] = False
            else:
                usage("invalid boolean value %s for -xds-creds" % go_quote(val))
            continue
        if not eq:
            if name in ("h", "help"):
                usage("", 0)
            if i >= len(argv):
                usage("flag needs an argument: -" + name)
            val = argv[i]
            i += 1
        try:
            if name == "interval":
                opts["interval"] = parse_duration(val)
            elif name == "timeout":
                opts["timeout"] = parse_duration(val)
            elif name == "header":
                k, colon, v = val.partition(":")
                if not colon or not k.strip():
                    usage("--header %s: want name:value" % go_quote(val))
                opts["headers"].append((k.strip().lower(), v.strip()))
            else:
                usage("flag provided but not defined: -" + name)
        except ValueError as e:
            usage(str(e))
    if len(rest) != 1:
        usage("want one target, e.g. xds:///be1:8080")
    if opts["interval"] <= 0:
        usage("--interval must be positive")
    opts["target"] = rest[0]
    return opts


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    opts = parse_args(sys.argv[1:])

    import grpc
    from google.protobuf import wrappers_pb2
    import echo_pb2_grpc

    sys.stderr.write("%s: grpcio %s (C-core)\n" % (PROG, grpc.__version__))
    sys.stderr.flush()
    if opts["xds_creds"]:
        import grpc.experimental
        creds = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
        channel = grpc.secure_channel(opts["target"], creds)
    else:
        channel = grpc.insecure_channel(opts["target"])
    stub = echo_pb2_grpc.EchoStub(channel)
    request = wrappers_pb2.StringValue(value="hi")
    metadata = opts["headers"] or None

    interval = opts["interval"]
    t0 = time.monotonic()
    tick = 0  # index of the last tick consumed
    while True:
        start = time.monotonic()
        try:
            reply = stub.Hello(request, timeout=opts["timeout"], metadata=metadata)
            us = int((time.monotonic() - start) * 1e6)
            v = reply.value
            name = v if len(v) < len(PREFIX) else v[len(PREFIX):]
            line = "ok %s %d\n" % (name, us)
        except grpc.RpcError as e:
            line = "err %s %s\n" % (code_name(e.code()), go_quote(e.details() or ""))
        sys.stdout.write(line)
        sys.stdout.flush()
        # As time.Ticker: every interval from the start; a tick missed while
        # an RPC was in flight starts the next one at once, later ones drop.
        now = time.monotonic()
        nxt = t0 + (tick + 1) * interval
        if nxt <= now:
            tick = int((now - t0) / interval)
            continue
        tick += 1
        time.sleep(nxt - now)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.dont_write_bytecode = True  # no __pycache__ in the source tree
        import server  # server.py, next to this file
        server.main(sys.argv[2:])  # runs until a signal ends the process
        sys.exit(0)
    if sys.argv[1:2] == ["probe"]:
        del sys.argv[1]
    try:
        main()
    except BrokenPipeError:
        # A reader that went away ends the probe, like SIGPIPE ends Go's.
        os._exit(0)
