#!/usr/bin/python3
"""Command server is the gRPC C-core twin of `nodexds-echo serve`: an echo
backend on Python's grpcio (C-core underneath), optionally an xDS-enabled
server (gRFC A36) with xDS credentials (A29); C-core enforces the
Listener's RBAC filter (A41) without any setting.

    python3 server.py [--listen :50051] [--name NAME] [--not-serving]
    GRPC_XDS_BOOTSTRAP_CONFIG='{...}' python3 server.py --xds --listen IP:PORT [--name NAME]

(`probe.py serve ...` is the same.) It needs no generated stubs: it serves,
with generic handlers, what internal/echo serves, so any probe can call it:

  - /nodexds.echo.Echo/Hello: google.protobuf.StringValue in and out,
    answering "Hello from NAME" (INTERNAL "NAME is failing" while failing);
  - grpc.health.v1.Health Check and Watch, the status of "" SERVING
    (NOT_SERVING with --not-serving), other services unknown.

Signals, as for nodexds-echo: SIGUSR1 / SIGUSR2 set health NOT_SERVING /
SERVING, SIGHUP toggles failing every Hello with INTERNAL, SIGINT and
SIGTERM stop it at once (exit status 0).

With --xds it is grpc.server(..., xds=True) with
grpc.xds_server_credentials(grpc.insecure_server_credentials()): C-core asks
the bootstrap's xDS server for the Listener named by the bootstrap's
server_listener_resource_name_template with the address --listen resolves
to, and binds the port only once it has a good one; TLS or mTLS when its
filter chain says so, plaintext otherwise. grpcio 1.51 reports no serving
state to Python: its "serving on ... once its Listener comes" line means the
port is registered, not bound (GRPC_VERBOSITY=INFO shows C-core's own lines
about the Listener; a NACK is logged at ERROR).

--listen ":PORT" is taken as "[::]:PORT" (C-core cannot parse ":PORT"; it is
what Go's net.Listen reports for it, so the Listener name is the same).
"""

import os
import signal
import socket
import sys
import threading

PROG = "nodexds-py-echo"

# grpc.health.v1.HealthCheckResponse.ServingStatus.
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]


def log(msg):
    sys.stderr.write("%s: %s\n" % (PROG, msg))
    sys.stderr.flush()


def usage(msg, code=2):
    if msg:
        log(msg)
    sys.stderr.write(
        "usage: server.py [--xds] [--listen ADDR] [--name NAME] [--not-serving]\n\n"
        "  --listen addr   address to listen on (default :50051, taken as [::]:50051, what\n"
        "                  Go's net.Listen reports for it); with --xds, the address whose\n"
        "                  Listener it asks for\n"
        "  --name name     name to answer with (default $POD_NAME, else the hostname)\n"
        "  --not-serving   start with health status NOT_SERVING\n"
        "  --xds           be an xDS-enabled server with xDS credentials (bootstrap from\n"
        "                  $GRPC_XDS_BOOTSTRAP or $GRPC_XDS_BOOTSTRAP_CONFIG)\n")
    sys.exit(code)


def parse_bool(name, val):
    """A Go boolean flag's value: -name alone is true, -name=v is
    strconv.ParseBool(v)."""
    if val is None:
        return True
    if val in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if val in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    usage('invalid boolean value "%s" for -%s' % (val, name))


def parse_args(argv):
    opts = {"listen": ":50051", "name": os.environ.get("POD_NAME", ""), "not_serving": False, "xds": False}
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            if i < len(argv):
                usage("unexpected argument %r" % argv[i])
            break
        if not a.startswith("-") or a == "-":
            usage("unexpected argument %r" % a)
        name, eq, val = a.lstrip("-").partition("=")
        if not eq:
            val = None
        if name in ("h", "help"):
            usage("", 0)
        if name in ("not-serving", "xds"):
            opts[name.replace("-", "_")] = parse_bool(name, val)
            continue
        if name not in ("listen", "name"):
            usage("flag provided but not defined: -" + name)
        if val is None:
            if i >= len(argv):
                usage("flag needs an argument: -" + name)
            val = argv[i]
            i += 1
        opts[name] = val
    if not opts["name"]:
        opts["name"] = socket.gethostname()
    return opts


class Health:
    """The health statuses and the Watch calls waiting on them."""

    def __init__(self, status):
        self.cond = threading.Condition()
        self.status = {"": status}
        self.stopping = False

    def set(self, service, st):
        with self.cond:
            self.status[service] = st
            self.cond.notify_all()


def encode_health_response(st):
    """The wire form of HealthCheckResponse{status}."""
    return b"" if st == UNKNOWN else bytes([0x08, st])


def main(argv):
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    opts = parse_args(argv)

    from concurrent import futures
    import grpc
    from google.protobuf import wrappers_pb2

    name = opts["name"]
    # C-core cannot parse ":PORT"; Go's net.Listen reports it as [::]:PORT.
    listen = "[::]" + opts["listen"] if opts["listen"].startswith(":") else opts["listen"]
    health = Health(NOT_SERVING if opts["not_serving"] else SERVING)
    failing = [False]

    def hello(request, context):
        if failing[0]:
            context.abort(grpc.StatusCode.INTERNAL, "%s is failing" % name)
        return wrappers_pb2.StringValue(value="Hello from " + name)

    # HealthCheckRequest{string service = 1} has StringValue's wire form.
    def check(request, context):
        with health.cond:
            st = health.status.get(request.value)
        if st is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return st

    def watch(request, context):
        last = None
        while context.is_active():
            with health.cond:
                st = health.status.get(request.value, SERVICE_UNKNOWN)
                if st == last:
                    health.cond.wait(timeout=1.0)  # and look at is_active again
                    continue
            last = st
            yield st

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), xds=opts["xds"])
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("nodexds.echo.Echo", {
            "Hello": grpc.unary_unary_rpc_method_handler(
                hello,
                request_deserializer=wrappers_pb2.StringValue.FromString,
                response_serializer=wrappers_pb2.StringValue.SerializeToString),
        }),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(
                check,
                request_deserializer=wrappers_pb2.StringValue.FromString,
                response_serializer=encode_health_response),
            "Watch": grpc.unary_stream_rpc_method_handler(
                watch,
                request_deserializer=wrappers_pb2.StringValue.FromString,
                response_serializer=encode_health_response),
        }),
    ))
    try:
        if opts["xds"]:
            port = server.add_secure_port(
                listen, grpc.xds_server_credentials(grpc.insecure_server_credentials()))
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError as e:
        log("listen on %s: %s" % (listen, e))
        sys.exit(1)
    server.start()
    log("grpcio %s (C-core)" % grpc.__version__)
    if opts["xds"]:
        # add_secure_port answers -1 for an xDS port: it is bound once its
        # Listener comes, and grpcio 1.51 does not tell when.
        log("%s serving on %s once its Listener comes" % (name, listen))
    else:
        log("%s serving on %s (port %d)" % (name, listen, port))

    def flip(sig, _frame):
        if sig == signal.SIGHUP:
            failing[0] = not failing[0]
            log("%s failing=%s" % (name, "true" if failing[0] else "false"))
            return
        st = NOT_SERVING if sig == signal.SIGUSR1 else SERVING
        health.set("", st)
        log("%s health %s" % (name, STATUS_NAMES[st]))

    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, flip)
    while True:
        signal.pause()


if __name__ == "__main__":
    main(sys.argv[1:])
