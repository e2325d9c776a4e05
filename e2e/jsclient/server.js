#!/usr/bin/env node
// Command server is the Node.js twin of `nodexds-echo serve`: an echo
// backend on @grpc/grpc-js, optionally an xDS-enabled server (gRFC A36) with
// xDS credentials (A29) and RBAC (A41) from @grpc/grpc-js-xds.
//
//	node server.js [--listen :50051] [--name NAME] [--not-serving]
//	GRPC_XDS_BOOTSTRAP_CONFIG='{...}' node server.js --xds --listen IP:PORT [--name NAME]
//
// (`node probe.js serve ...` is the same.) It serves what internal/echo
// serves, so any probe can call it:
//
//   - /nodexds.echo.Echo/Hello: google.protobuf.StringValue in and out,
//     answering "Hello from NAME" (INTERNAL "NAME is failing" while failing);
//   - grpc.health.v1.Health Check and Watch, the status of "" SERVING
//     (NOT_SERVING with --not-serving), other services unknown.
//
// Signals, as for nodexds-echo: SIGUSR1 / SIGUSR2 set health NOT_SERVING /
// SERVING, SIGHUP toggles failing every Hello with INTERNAL, SIGINT and
// SIGTERM stop it at once (exit status 0).
//
// With --xds it is an XdsServer: it asks the bootstrap's xDS server for the
// Listener named by the bootstrap's server_listener_resource_name_template
// with the --listen address, and binds the port only once it has one (so
// the "serving on" line comes then). Its credentials are
// XdsServerCredentials with an insecure fallback: TLS or mTLS when the
// Listener's filter chain says so, plaintext otherwise. grpc-js-xds 1.14
// enforces the Listener's RBAC filter only when GRPC_XDS_EXPERIMENTAL_RBAC
// is "true" (and NACKs a Listener with a required RBAC filter otherwise), so
// this program sets it to "true" in its own environment, before loading
// grpc-js-xds, unless it is already set.
'use strict';

const os = require('os');
const { encodeStringValue, decodeStringValue, goQuote, parseBool, forEachFlag } = require('./probe.js');

const PROG = 'nodexds-js-echo';

// grpc.health.v1.HealthCheckResponse.ServingStatus.
const UNKNOWN = 0;
const SERVING = 1;
const NOT_SERVING = 2;
const SERVICE_UNKNOWN = 3;
const STATUS_NAMES = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

function log(msg) {
  process.stderr.write(`${PROG}: ${msg}\n`);
}

function usage(msg, code = 2) {
  if (msg) log(msg);
  process.stderr.write(`usage: node server.js [--xds] [--listen ADDR] [--name NAME] [--not-serving]

  --listen addr   address to listen on (default :50051); with --xds a literal IP:PORT
                  (":PORT" is taken as "[::]:PORT", what Go's net.Listen reports for it)
  --name name     name to answer with (default $POD_NAME, else the hostname)
  --not-serving   start with health status NOT_SERVING
  --xds           be an xDS-enabled server with xDS credentials (bootstrap from
                  $GRPC_XDS_BOOTSTRAP or $GRPC_XDS_BOOTSTRAP_CONFIG)
`);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = { listen: ':50051', name: process.env.POD_NAME || '', notServing: false, xds: false };
  forEachFlag(argv, usage, (a, val, value) => {
    switch (a) {
      case 'listen': opts.listen = value(); break;
      case 'name': opts.name = value(); break;
      case 'not-serving': opts.notServing = parseBool(a, val); break;
      case 'xds': opts.xds = parseBool(a, val); break;
      case 'h': case 'help': usage('', 0); break;
      default: usage(`flag provided but not defined: -${a}`);
    }
  }, (a) => usage(`unexpected argument ${goQuote(a)}`));
  if (!opts.name) opts.name = os.hostname();
  return opts;
}

// encodeHealthResponse is the wire form of HealthCheckResponse{status}.
function encodeHealthResponse(st) {
  return st === UNKNOWN ? Buffer.alloc(0) : Buffer.from([0x08, st]);
}

function main(argv) {
  let stop = () => process.exit(0);
  process.on('SIGINT', () => stop());
  process.on('SIGTERM', () => stop());

  const opts = parseArgs(argv);
  let listen = opts.listen;
  if (listen.startsWith(':')) listen = '[::]' + listen;

  if (opts.xds && process.env.GRPC_XDS_EXPERIMENTAL_RBAC === undefined) {
    process.env.GRPC_XDS_EXPERIMENTAL_RBAC = 'true'; // read when grpc-js-xds loads
  }
  const grpc = require('@grpc/grpc-js');
  const xds = opts.xds ? require('@grpc/grpc-js-xds') : null;
  // register() also fills grpc-js-xds' HTTP filter registry (router, RBAC,
  // fault injection): without it an XdsServer NACKs every Listener
  // ("envoy.filters.http.router filter validation failed").
  if (xds) xds.register();

  // Health: the status of each service name, and the Watch calls to tell.
  const health = new Map([['', opts.notServing ? NOT_SERVING : SERVING]]);
  const watchers = new Set(); // { service, call, last }
  const setHealth = (service, st) => {
    health.set(service, st);
    for (const w of watchers) {
      if (w.service === service && w.last !== st) {
        w.last = st;
        w.call.write(st);
      }
    }
  };
  let failing = false;

  const raw = (b) => b; // messages are encoded and decoded by hand
  const server = xds ? new xds.XdsServer() : new grpc.Server();
  server.addService({
    Hello: {
      path: '/nodexds.echo.Echo/Hello', requestStream: false, responseStream: false,
      requestSerialize: raw, requestDeserialize: decodeStringValue,
      responseSerialize: encodeStringValue, responseDeserialize: raw,
    },
  }, {
    Hello: (call, callback) => {
      if (failing) {
        callback({ code: grpc.status.INTERNAL, details: `${opts.name} is failing` });
        return;
      }
      callback(null, 'Hello from ' + opts.name);
    },
  });
  // HealthCheckRequest{string service = 1} has StringValue's wire form. The
  // request is an object: grpc-js takes a falsy one (the empty string of
  // an empty request) for none, and fails the call UNIMPLEMENTED.
  const service = (buf) => ({ service: decodeStringValue(buf).toString('utf8') });
  server.addService({
    Check: {
      path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false,
      requestSerialize: raw, requestDeserialize: service,
      responseSerialize: encodeHealthResponse, responseDeserialize: raw,
    },
    Watch: {
      path: '/grpc.health.v1.Health/Watch', requestStream: false, responseStream: true,
      requestSerialize: raw, requestDeserialize: service,
      responseSerialize: encodeHealthResponse, responseDeserialize: raw,
    },
  }, {
    Check: (call, callback) => {
      if (!health.has(call.request.service)) {
        callback({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
        return;
      }
      callback(null, health.get(call.request.service));
    },
    Watch: (call) => {
      const { service: name } = call.request;
      const w = { service: name, call, last: health.get(name) ?? SERVICE_UNKNOWN };
      watchers.add(w);
      call.write(w.last);
      const done = () => watchers.delete(w);
      call.on('cancelled', done);
      call.on('error', done);
      call.on('close', done);
    },
  });

  const creds = xds
    ? new xds.XdsServerCredentials(grpc.ServerCredentials.createInsecure())
    : grpc.ServerCredentials.createInsecure();
  let bindErr = null;
  try {
    server.bindAsync(listen, creds, (err, port) => {
      if (err) {
        log(`${err.message}`);
        process.exit(1);
      }
      log(`${opts.name} serving on ${listen} (port ${port})`);
    });
  } catch (e) {
    bindErr = e; // XdsServer.bindAsync throws on an address that is not IP:PORT
  }
  if (bindErr) {
    log(bindErr.message);
    process.exit(1);
  }
  if (xds) {
    // Every change of the port's serving state (gRFC A36), as nodexds-echo
    // logs its ServingModeCallback: a NACKed or missing Listener shows here.
    // grpc-js-xds reports a state again when a new Listener is applied; a
    // line is written only when it changed.
    let last = '';
    server.addServingStateListener(listen, (st) => {
      const mode = st.code === grpc.status.OK ? 'SERVING' : 'NOT_SERVING';
      const line = `${opts.name} xDS ${mode} on ${listen} (${st.code === grpc.status.OK ? 'ok' : `${st.code} ${goQuote(String(st.details ?? ''))}`})`;
      if (line !== last) log(line);
      last = line;
    });
    log(`${opts.name} waiting for the Listener of ${listen}`);
  }

  stop = () => {
    server.forceShutdown();
    process.exit(0);
  };
  process.on('SIGHUP', () => {
    failing = !failing;
    log(`${opts.name} failing=${failing}`);
  });
  for (const [sig, st] of [['SIGUSR1', NOT_SERVING], ['SIGUSR2', SERVING]]) {
    process.on(sig, () => {
      setHealth('', st);
      log(`${opts.name} health ${STATUS_NAMES[st]}`);
    });
  }
}

module.exports = { main };

if (require.main === module) {
  main(process.argv.slice(2));
}
