#!/usr/bin/env node
// Command probe is the Node.js twin of `nodexds-echo probe`: a second,
// independent xDS client stack (@grpc/grpc-js + @grpc/grpc-js-xds) for the
// end-to-end tests.
//
//	GRPC_XDS_BOOTSTRAP_CONFIG='{...}' node probe.js [--interval 50ms] [--timeout 1s] \
//	    [--header name:value]... [--xds-creds] xds:///be1:8080 [xds:///be2:8080 ...]
//	GRPC_XDS_BOOTSTRAP_CONFIG='{...}' node probe.js serve --xds --listen IP:PORT --name NAME
//
// `probe.js serve` is the twin of `nodexds-echo serve` (server.js). The probe
// alone may also be written `probe.js probe [flags] TARGET...`.
//
// It calls /nodexds.echo.Echo/Hello (google.protobuf.StringValue in and out,
// encoded by hand: no protos, no codegen) once per interval, one RPC in flight
// at a time, and prints one line per RPC to stdout, exactly like the Go probe
// (internal/echo.Probe):
//
//	ok <backend-name> <latency-microseconds>
//	err <GoCodeName> "<message>"
//
// Several targets share the process, and so grpc-js-xds' one xDS client and
// ADS stream: each target is probed by its own loop, and its lines end with
// " <target>". A target starts once the previous one's first RPC is done, so
// every later target is a subscription added to a stream that is already up.
//
// With --xds-creds the channels use grpc-js-xds' XdsChannelCredentials with
// an insecure fallback, as `nodexds-echo probe -xds-creds` does: mTLS when
// the agent's Cluster carries TLS settings, plaintext otherwise.
//
// The bootstrap comes from GRPC_XDS_BOOTSTRAP (a file) or, if that is unset,
// GRPC_XDS_BOOTSTRAP_CONFIG (the JSON itself); grpc-js-xds reads both.
// SIGINT and SIGTERM stop it cleanly with exit status 0; the RPC in flight
// then is cancelled and not reported, as in the Go probe.
'use strict';

// Loading grpc-js-xds takes most of a second (it parses the xDS protos), so
// the libraries are loaded in main, after the signal handlers are installed:
// a SIGTERM that arrives while starting up still ends the probe cleanly.
let grpc = null;

const METHOD = '/nodexds.echo.Echo/Hello';
const PREFIX = Buffer.from('Hello from ');
const PROG = 'nodexds-js-probe';

// Go's codes.Code.String() names, indexed by code.
const CODE_NAMES = [
  'OK', 'Canceled', 'Unknown', 'InvalidArgument', 'DeadlineExceeded', 'NotFound',
  'AlreadyExists', 'PermissionDenied', 'ResourceExhausted', 'FailedPrecondition',
  'Aborted', 'OutOfRange', 'Unimplemented', 'Internal', 'Unavailable', 'DataLoss',
  'Unauthenticated',
];

function codeName(code) {
  return Number.isInteger(code) && code >= 0 && code < CODE_NAMES.length
    ? CODE_NAMES[code] : `Code(${code})`;
}

// --- google.protobuf.StringValue: field 1 (value), wire type 2 ------------

function encodeVarint(n) {
  const out = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

// encodeStringValue returns the wire form of StringValue{value: s}.
function encodeStringValue(s) {
  const v = Buffer.from(s, 'utf8');
  if (v.length === 0) return Buffer.alloc(0); // proto3: default not sent
  return Buffer.concat([Buffer.from([0x0a, ...encodeVarint(v.length)]), v]);
}

function readVarint(buf, pos) {
  let result = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) throw new Error('truncated varint');
    const b = buf[pos++];
    result += (b & 0x7f) * mul;
    if ((b & 0x80) === 0) return [result, pos];
    mul *= 128;
  }
  throw new Error('varint too long');
}

// decodeStringValue returns the raw bytes of StringValue.value, skipping
// unknown fields; the last occurrence of field 1 wins, as in protobuf.
function decodeStringValue(buf) {
  let value = Buffer.alloc(0);
  let pos = 0;
  while (pos < buf.length) {
    let key;
    [key, pos] = readVarint(buf, pos);
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (field === 0) throw new Error('invalid field number 0');
    switch (wire) {
      case 0: [, pos] = readVarint(buf, pos); break;
      case 1: pos += 8; break;
      case 5: pos += 4; break;
      case 2: {
        let len;
        [len, pos] = readVarint(buf, pos);
        if (pos + len > buf.length) throw new Error('truncated bytes field');
        if (field === 1) value = buf.subarray(pos, pos + len);
        pos += len;
        break;
      }
      default: throw new Error(`unsupported wire type ${wire}`);
    }
    if (pos > buf.length) throw new Error('truncated message');
  }
  return value;
}

// backendName mirrors echo.Hello: the reply minus its first len("Hello from ")
// bytes (Go slices without checking the prefix), or all of it if shorter.
function backendName(raw) {
  return (raw.length < PREFIX.length ? raw : raw.subarray(PREFIX.length)).toString('utf8');
}

// --- Go formatting helpers --------------------------------------------------

// goQuote is Go's strconv.Quote (what %q prints) for a JS string: printable
// runes as they are, the usual backslash escapes, \xHH below space and for
// DEL, \uHHHH / \UHHHHHHHH for other non-printable runes.
const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;
function goQuote(s) {
  let out = '"';
  for (const ch of s) {
    const r = ch.codePointAt(0);
    if (ch === '"' || ch === '\\') { out += '\\' + ch; continue; }
    if (r === 0x20 || (r > 0x20 && r < 0x7f)) { out += ch; continue; }
    if (r > 0x7f && PRINTABLE.test(ch)) { out += ch; continue; }
    switch (ch) {
      case '\x07': out += '\\a'; continue;
      case '\b': out += '\\b'; continue;
      case '\f': out += '\\f'; continue;
      case '\n': out += '\\n'; continue;
      case '\r': out += '\\r'; continue;
      case '\t': out += '\\t'; continue;
      case '\v': out += '\\v'; continue;
    }
    if (r < 0x20 || r === 0x7f) out += '\\x' + r.toString(16).padStart(2, '0');
    else if (r >= 0xd800 && r <= 0xdfff) out += '\\ufffd'; // lone surrogate: not valid UTF-8
    else if (r < 0x10000) out += '\\u' + r.toString(16).padStart(4, '0');
    else out += '\\U' + r.toString(16).padStart(8, '0');
  }
  return out + '"';
}

// parseDuration parses a Go time.ParseDuration string ("50ms", "1.5s",
// "1m30s", "250us", "0") into milliseconds.
const UNIT_MS = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 };
function parseDuration(s) {
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  let sign = 1;
  if (s[0] === '-' || s[0] === '+') { sign = s[0] === '-' ? -1 : 1; pos = 1; }
  if (pos >= s.length) throw new Error(`invalid duration ${goQuote(s)}`);
  while (pos < s.length) {
    re.lastIndex = pos;
    const m = re.exec(s);
    if (!m) throw new Error(`invalid duration ${goQuote(s)}`);
    total += parseFloat(m[1]) * UNIT_MS[m[2]];
    pos = re.lastIndex;
  }
  return sign * total;
}

// --- command line -----------------------------------------------------------

// parseBool is a Go boolean flag's value: -name alone is true, -name=v is
// strconv.ParseBool(v). (As in Go, -name v does not take v as its value.)
function parseBool(name, val) {
  if (val === undefined) return true;
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(val)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(val)) return false;
  throw new Error(`invalid boolean value ${goQuote(val)} for -${name}`);
}

// forEachFlag reads argv like Go's flag package: -name or --name, a value as
// the next argument or after '='. onFlag(name, val, value) gets val (what
// followed '=', if anything) and value() (val, else the next argument);
// onArg gets every other argument, and all after '--'. An error thrown by
// onFlag goes to usage.
function forEachFlag(argv, usage, onFlag, onArg) {
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (a === '--') { argv.slice(i + 1).forEach(onArg); break; }
    if (!a.startsWith('-') || a === '-') { onArg(a); continue; }
    a = a.replace(/^--?/, '');
    let val;
    const eq = a.indexOf('=');
    if (eq >= 0) { val = a.slice(eq + 1); a = a.slice(0, eq); }
    const value = () => {
      if (val !== undefined) return val;
      if (i + 1 >= argv.length) usage(`flag needs an argument: -${a}`);
      return argv[++i];
    };
    try {
      onFlag(a, val, value);
    } catch (e) {
      usage(e.message);
    }
  }
}

function usage(msg, code = 2) {
  if (msg) process.stderr.write(`${PROG}: ${msg}\n`);
  process.stderr.write(`usage: node probe.js [probe] [--interval 50ms] [--timeout 1s] [--header name:value]... [--xds-creds] xds:///NAME [xds:///NAME2 ...]
       node probe.js serve [--xds] [--listen IP:PORT] [--name NAME] [--not-serving]

  --interval d        time between RPCs (default 50ms)
  --timeout d         per-RPC deadline (default 1s)
  --header name:value request metadata sent on every RPC (repeatable)
  --xds-creds         use xDS credentials (mTLS when the agent's cluster says so, plaintext otherwise)
`);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = { intervalMs: 50, timeoutMs: 1000, headers: [], targets: [], xdsCreds: false };
  const rest = [];
  forEachFlag(argv, usage, (a, val, value) => {
    switch (a) {
      case 'xds-creds': opts.xdsCreds = parseBool(a, val); break;
      case 'interval': opts.intervalMs = parseDuration(value()); break;
      case 'timeout': opts.timeoutMs = parseDuration(value()); break;
      case 'header': {
        const h = value();
        const c = h.indexOf(':');
        if (c <= 0) usage(`--header ${goQuote(h)}: want name:value`);
        opts.headers.push([h.slice(0, c).trim().toLowerCase(), h.slice(c + 1).trim()]);
        break;
      }
      case 'h': case 'help': usage('', 0); break;
      default: usage(`flag provided but not defined: -${a}`);
    }
  }, (a) => rest.push(a));
  if (rest.length < 1) usage('want a target, e.g. xds:///be1:8080');
  opts.targets = rest;
  if (!(opts.intervalMs > 0)) usage('--interval must be positive');
  return opts;
}

// --- the probe --------------------------------------------------------------

function main() {
  // Until the probe runs, a signal just exits; the probe replaces stop below.
  let stop = () => process.exit(0);
  process.on('SIGINT', () => stop());
  process.on('SIGTERM', () => stop());

  const opts = parseArgs(process.argv.slice(2));
  grpc = require('@grpc/grpc-js');
  const xds = require('@grpc/grpc-js-xds');
  xds.register();
  const creds = opts.xdsCreds
    ? new xds.XdsChannelCredentials(grpc.credentials.createInsecure())
    : grpc.credentials.createInsecure();

  const metadata = new grpc.Metadata();
  try {
    for (const [k, v] of opts.headers) {
      metadata.add(k, k.endsWith('-bin') ? Buffer.from(v) : v);
    }
  } catch (e) {
    usage(`--header: ${e.message}`);
  }

  const clients = [];
  try {
    for (const target of opts.targets) {
      clients.push(new grpc.Client(target, creds));
    }
  } catch (e) {
    process.stderr.write(`${PROG}: ${e.message}\n`);
    process.exit(1);
  }

  // A reader that went away (EPIPE) ends the probe, like SIGPIPE ends Go's.
  process.stdout.on('error', () => process.exit(0));

  const request = encodeStringValue('hi');
  let stopping = false;
  const loops = []; // per target: { inflight, timer }

  stop = () => {
    if (stopping) return;
    stopping = true;
    for (const l of loops) {
      if (l.timer) clearTimeout(l.timer);
      if (l.inflight) l.inflight.cancel();
    }
    for (const client of clients) {
      try { client.close(); } catch (_) { /* closing anyway */ }
    }
    // stdout writes to pipes and files are synchronous on Linux, so every
    // line is out already; exit without waiting for the xDS client's timers.
    process.exit(0);
  };

  // With one target the output is exactly the Go probe's; with several,
  // each line names its target.
  const suffix = (i) => (clients.length > 1 ? ` ${opts.targets[i]}` : '');
  const startLoop = (i) => {
    if (i >= clients.length || stopping) return;
    const l = { inflight: null, timer: null };
    loops.push(l);
    probeLoop(clients[i], l, suffix(i), () => startLoop(i + 1));
  };
  startLoop(0);

  // probeLoop probes one target until stop; firstDone is called once, when
  // its first RPC has finished.
  function probeLoop(client, l, lineSuffix, firstDone) {
    // Ticks as time.Ticker: every interval from the start. A tick that passes
    // while an RPC is in flight lets the next RPC start at once; ticks beyond
    // that one are dropped.
    const t0 = process.hrtime.bigint();
    const intervalNs = BigInt(Math.max(1, Math.round(opts.intervalMs * 1e6)));
    let lastTick = 0n; // index of the last tick consumed

    const waitTick = () => {
      const now = process.hrtime.bigint();
      const next = lastTick + 1n;
      const at = t0 + next * intervalNs;
      if (at <= now) {
        lastTick = (now - t0) / intervalNs;
        setImmediate(once);
        return;
      }
      lastTick = next;
      l.timer = setTimeout(() => { l.timer = null; once(); }, Math.ceil(Number(at - now) / 1e6));
    };

    const once = () => {
      if (stopping) return;
      const start = process.hrtime.bigint();
      l.inflight = client.makeUnaryRequest(
        METHOD,
        (arg) => arg, // already encoded
        decodeStringValue,
        request,
        metadata,
        { deadline: new Date(Date.now() + opts.timeoutMs) },
        (err, value) => {
          l.inflight = null;
          if (stopping) return;
          let line;
          if (err) {
            line = `err ${codeName(err.code)} ${goQuote(String(err.details ?? ''))}${lineSuffix}\n`;
          } else {
            const us = (process.hrtime.bigint() - start) / 1000n;
            line = `ok ${backendName(value)} ${us}${lineSuffix}\n`;
          }
          process.stdout.write(line);
          if (firstDone) {
            const f = firstDone;
            firstDone = null;
            f();
          }
          waitTick();
        },
      );
    };

    once();
  }
}

// Exported before main runs: server.js, which `probe.js serve` loads, uses
// the helpers.
module.exports = { encodeStringValue, decodeStringValue, goQuote, parseDuration, codeName, backendName, parseBool, forEachFlag };

if (require.main === module) {
  const argv = process.argv.slice(2);
  if (argv[0] === 'serve') {
    require('./server.js').main(argv.slice(1));
  } else {
    if (argv[0] === 'probe') process.argv.splice(2, 1);
    main();
  }
}
