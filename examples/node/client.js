#!/usr/bin/env node
// A Node.js caller of the Model Gateway (modelgateway.v1.ModelGateway).
//
// The .proto files are loaded at run time straight from the repository's protos/ folder with
// @grpc/proto-loader: no generated code, so the client always speaks the current contract.
//
//   node client.js [options] [TARGET] [PROMPT...]
//
//   TARGET   host:port of the gateway (default: $MODEL_GATEWAY_ADDR or 127.0.0.1:50051)
//   PROMPT   the user message (default: "What is 25 + 75?")
//
//   --rpc LIST        comma-separated RPCs to call, in order (default: health,generate):
//                     health, generate, stream, providers, status
//   --json            print one JSON object {"health": {...}, "generate": {...}, ...} on stdout
//   --provider NAME   a configured provider ("anthropic", "bedrock", "mock"); default: the gateway's
//   --model ID        a model id or alias; default: the provider's
//   --system TEXT     the system prompt
//   --max-tokens N    upper bound of output tokens
//   --request-id ID   sent as the "x-request-id" metadata
//   --timeout SEC     deadline of each call (default 30)
//   --tls             TLS with the system's roots instead of plaintext
//   --protos DIR      where the .proto files are (default: ../../protos, or $MODEL_GATEWAY_PROTOS)
//
// Exit status: 0 when every call succeeded, 1 when one failed (its gRPC code, message and the
// google.rpc ErrorInfo / BadRequest / RetryInfo details are printed), 2 for a usage error.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_FILE = 'modelgateway/v1/model_gateway.proto';
const DEFAULT_PROTOS = process.env.MODEL_GATEWAY_PROTOS || path.resolve(__dirname, '..', '..', 'protos');
const DEFAULT_TARGET = process.env.MODEL_GATEWAY_ADDR || '127.0.0.1:50051';
const DEFAULT_PROMPT = 'What is 25 + 75?';

// proto-loader options. keepCase: false gives lowerCamelCase field names (maxTokens,
// finishReason, requestId): the proto3 JSON names, which protobuf's JSON printers emit by default
// (grpcurl prints the .proto's snake_case names and accepts both). Requests must use them too.
// Enums are their names ("ROLE_USER"), int64 are strings, and unset fields come back as their
// defaults, as in the other languages' generated code.
// google/protobuf/timestamp.proto (and the other well-known types) are built into protobufjs,
// so the only include directory needed is protos/ itself.
const LOADER_OPTIONS = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Loads the contract and returns the modelgateway.v1 package (its ModelGateway client class). */
function loadContract(protosDir = DEFAULT_PROTOS) {
  const definition = protoLoader.loadSync(PROTO_FILE, { ...LOADER_OPTIONS, includeDirs: [protosDir] });
  return grpc.loadPackageDefinition(definition).modelgateway.v1;
}

/** A ModelGateway client for target ("host:port"); plaintext unless tls. */
function newClient(target, { tls = false, protosDir = DEFAULT_PROTOS } = {}) {
  const { ModelGateway } = loadContract(protosDir);
  const credentials = tls ? grpc.credentials.createSsl() : grpc.credentials.createInsecure();
  return new ModelGateway(target, credentials);
}

function callOptions({ timeoutSec = 30, requestId } = {}) {
  const metadata = new grpc.Metadata();
  if (requestId) metadata.set('x-request-id', requestId);
  return { metadata, options: { deadline: new Date(Date.now() + timeoutSec * 1000) } };
}

/** Calls a unary RPC; resolves with the response message. */
function unary(client, method, request, opts) {
  const { metadata, options } = callOptions(opts);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, options, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

/** Calls a server-streaming RPC; onMessage(message) for each one; resolves when the stream ends OK. */
function serverStream(client, method, request, opts, onMessage) {
  const { metadata, options } = callOptions(opts);
  return new Promise((resolve, reject) => {
    const call = client[method](request, metadata, options);
    call.on('data', onMessage);
    call.on('error', reject);
    call.on('status', (status) => {
      if (status.code === grpc.status.OK) resolve();
    });
  });
}

/** Calls method whichever its kind (read from the loaded service definition). */
async function invoke(client, method, request, opts, onMessage) {
  const definition = client.constructor.service[method];
  if (!definition) {
    throw new Error(`the contract has no modelgateway.v1.ModelGateway/${method} (yet)`);
  }
  if (definition.responseStream) {
    const messages = [];
    await serverStream(client, method, request, opts, (message) => {
      messages.push(message);
      if (onMessage) onMessage(message);
    });
    return messages;
  }
  return unary(client, method, request, opts);
}

function generateRequest(args) {
  const request = { messages: [{ role: 'ROLE_USER', content: args.prompt }] };
  if (args.system) request.system = args.system;
  if (args.provider) request.provider = args.provider;
  if (args.model) request.model = args.model;
  if (args.maxTokens) request.maxTokens = args.maxTokens;
  return request;
}

// google.protobuf.Timestamp ({seconds: "…", nanos: n}) as RFC 3339, as in proto3 JSON.
function timestampToIso(ts) {
  if (!ts) return null;
  const millis = Number(ts.seconds) * 1000 + Math.floor((ts.nanos || 0) / 1e6);
  return new Date(millis).toISOString();
}

// google.protobuf.Struct / Value (as proto-loader decodes them) as plain JSON, as in proto3 JSON.
function structToJson(struct) {
  if (!struct || !struct.fields) return {};
  return Object.fromEntries(Object.entries(struct.fields).map(([k, v]) => [k, valueToJson(v)]));
}

function valueToJson(value) {
  switch (value && value.kind) {
    case 'structValue':
      return structToJson(value.structValue);
    case 'listValue':
      return (value.listValue.values || []).map(valueToJson);
    case 'nullValue':
    case undefined:
      return null;
    default:
      return value[value.kind];
  }
}

// Content blocks with their Struct inputs as plain JSON.
function blocksToJson(blocks) {
  return (blocks || []).map((b) => (b.toolUse ? { ...b, toolUse: { ...b.toolUse, input: structToJson(b.toolUse.input) } } : b));
}

// A GenerateStream's events folded into one answer: start, the text, tool calls, end.
function summarizeStream(events) {
  const summary = { start: null, content: '', toolUses: [], end: null, events: events.length };
  for (const e of events) {
    if (e.event === 'start') summary.start = e.start;
    else if (e.event === 'end') summary.end = e.end;
    else if (e.event === 'delta' && e.delta.delta === 'text') summary.content += e.delta.text;
    else if (e.event === 'delta' && e.delta.delta === 'toolUse') {
      summary.toolUses.push({ ...e.delta.toolUse, input: structToJson(e.delta.toolUse.input) });
    }
  }
  return summary;
}

// What each --rpc name calls, and how its answer is shown. A new RPC is one more entry here.
const RPCS = {
  health: {
    method: 'Health',
    request: () => ({}),
    toJson: (r) => ({
      ...r,
      timestamp: timestampToIso(r.timestamp),
      providers: r.providers.map((p) => ({ ...p, checkedAt: timestampToIso(p.checkedAt) })),
    }),
    print: (r) => {
      console.log(`health: ${r.status}`);
      for (const p of r.providers) {
        const error = p.lastError ? ` (${p.lastError})` : '';
        console.log(`  ${p.name} [${p.type}] ${p.status} ${p.latencyMs.toFixed(1)} ms${error}`);
      }
    },
  },
  generate: {
    method: 'Generate',
    request: generateRequest,
    toJson: (r) => ({ ...r, blocks: blocksToJson(r.blocks) }),
    print: (r) => {
      console.log(r.content);
      const u = r.usage || {};
      console.error(
        `[${r.provider}/${r.model} ${r.finishReason} tokens ${u.inputTokens}+${u.outputTokens} ` +
          `${r.latencyMs.toFixed(1)} ms request ${r.requestId}]`,
      );
    },
  },
  // GenerateStream: events start (who answers), deltas (text, or a whole tool call), end
  // (finish reason, usage, attempts). Text is printed as it arrives.
  stream: {
    method: 'GenerateStream',
    request: generateRequest,
    onMessage: (event, args) => {
      if (args.json || event.event !== 'delta') return;
      const d = event.delta;
      if (d.delta === 'text') process.stdout.write(d.text);
      else if (d.delta === 'toolUse') process.stdout.write(`\n[tool_use ${d.toolUse.name} ${JSON.stringify(structToJson(d.toolUse.input))}]\n`);
    },
    toJson: summarizeStream,
    print: (events) => {
      process.stdout.write('\n');
      const s = summarizeStream(events);
      const u = (s.end && s.end.usage) || {};
      const start = s.start || {};
      console.error(
        `[${start.provider}/${start.model} ${s.end ? s.end.finishReason : 'no end event'} ` +
          `tokens ${u.inputTokens}+${u.outputTokens} ${s.events} events request ${start.requestId}]`,
      );
    },
  },
  providers: {
    method: 'ListProviders',
    request: () => ({}),
    print: (r) => {
      console.log(`default: ${r.defaultProvider}; fallback order: ${r.fallbackOrder.join(', ') || '-'}`);
      for (const p of r.providers) {
        const state = `${p.enabled ? 'enabled' : 'disabled'}, ${p.configured ? 'configured' : 'unconfigured'}`;
        console.log(`  ${p.name} [${p.type}] ${state}; default model ${p.defaultModel}; models: ${p.models.join(', ') || '-'}`);
      }
    },
  },
  status: {
    method: 'GetStatus',
    request: () => ({}),
    print: (r) => console.log(`${r.service} ${r.version}: ${r.status}; providers: ${r.providers.join(', ')}`),
  },
};

// The error model (AIP-193): google.rpc.Status in the "grpc-status-details-bin" trailer, with
// ErrorInfo (reason, domain, metadata), BadRequest for field errors and, for RESOURCE_EXHAUSTED,
// RetryInfo. Those few types are declared here so that the example needs no googleapis protos.
const ERROR_DETAILS_PROTO = `
syntax = "proto3";
package google.rpc;
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
message RetryInfo { google.protobuf.Duration retry_delay = 1; }
message BadRequest {
  message FieldViolation { string field = 1; string description = 2; }
  repeated FieldViolation field_violations = 1;
}
`;
let errorTypes;

function decodeErrorDetails(err) {
  const raw = err.metadata && err.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return {};
  if (!errorTypes) {
    const root = protobuf.parse(ERROR_DETAILS_PROTO, new protobuf.Root(), { keepCase: false }).root;
    root.addJSON(protobuf.common['google/protobuf/any.proto'].nested);
    root.addJSON(protobuf.common['google/protobuf/duration.proto'].nested);
    root.resolveAll();
    errorTypes = {
      status: root.lookupType('google.rpc.Status'),
      'type.googleapis.com/google.rpc.ErrorInfo': root.lookupType('google.rpc.ErrorInfo'),
      'type.googleapis.com/google.rpc.RetryInfo': root.lookupType('google.rpc.RetryInfo'),
      'type.googleapis.com/google.rpc.BadRequest': root.lookupType('google.rpc.BadRequest'),
    };
  }
  const found = {};
  try {
    const status = errorTypes.status.decode(Buffer.from(raw));
    for (const any of status.details) {
      const typeUrl = any.type_url; // the well-known Any keeps its snake_case field names
      const type = errorTypes[typeUrl];
      if (!type) continue;
      const detail = type.toObject(type.decode(any.value), { longs: String });
      if (typeUrl.endsWith('ErrorInfo')) found.errorInfo = detail;
      else if (typeUrl.endsWith('BadRequest')) found.badRequest = detail;
      else {
        const d = detail.retryDelay || {};
        found.retryInfo = { retryDelaySeconds: Number(d.seconds || 0) + (d.nanos || 0) / 1e9 };
      }
    }
  } catch (e) {
    found.undecodable = String(e.message || e);
  }
  return found;
}

function describeError(rpc, err) {
  const codeName = Object.keys(grpc.status).find((k) => grpc.status[k] === err.code);
  if (codeName === undefined) return { rpc, message: String(err.message || err) };
  return { rpc, code: err.code, codeName, message: err.details, ...decodeErrorDetails(err) };
}

function printError(e) {
  let line = `${e.rpc} failed: ${e.codeName ? `${e.codeName} (${e.code}): ` : ''}${e.message}`;
  if (e.errorInfo) {
    const meta = Object.entries(e.errorInfo.metadata || {})
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
    line += `\n  reason ${e.errorInfo.reason} (domain ${e.errorInfo.domain})${meta ? ` ${meta}` : ''}`;
  }
  for (const v of (e.badRequest && e.badRequest.fieldViolations) || []) line += `\n  field ${v.field}: ${v.description}`;
  if (e.retryInfo) line += `\n  retry after ${e.retryInfo.retryDelaySeconds}s`;
  console.error(line);
}

function parseCommandLine(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      rpc: { type: 'string', default: 'health,generate' },
      json: { type: 'boolean', default: false },
      provider: { type: 'string' },
      model: { type: 'string' },
      system: { type: 'string' },
      'max-tokens': { type: 'string' },
      'request-id': { type: 'string' },
      timeout: { type: 'string', default: '30' },
      tls: { type: 'boolean', default: false },
      protos: { type: 'string', default: DEFAULT_PROTOS },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const rpcs = values.rpc.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = rpcs.filter((r) => !(r in RPCS));
  if (unknown.length) throw new Error(`unknown --rpc ${unknown.join(', ')} (known: ${Object.keys(RPCS).join(', ')})`);
  const maxTokens = values['max-tokens'] === undefined ? 0 : Number(values['max-tokens']);
  const timeoutSec = Number(values.timeout);
  if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new Error('--max-tokens wants a whole number');
  if (!(timeoutSec > 0)) throw new Error('--timeout wants a positive number of seconds');
  return {
    help: values.help,
    target: positionals[0] || DEFAULT_TARGET,
    prompt: positionals.slice(1).join(' ') || DEFAULT_PROMPT,
    rpcs,
    json: values.json,
    provider: values.provider,
    model: values.model,
    system: values.system,
    maxTokens,
    requestId: values['request-id'],
    timeoutSec,
    tls: values.tls,
    protosDir: values.protos,
  };
}

async function main(argv) {
  let args;
  try {
    args = parseCommandLine(argv);
  } catch (e) {
    console.error(`usage error: ${e.message}\nrun with --help for the options`);
    return 2;
  }
  if (args.help) {
    const fs = require('node:fs');
    const lines = fs.readFileSync(__filename, 'utf8').split('\n').slice(1);
    const header = lines.slice(0, lines.findIndex((l) => !l.startsWith('//')));
    console.log(header.map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
    return 0;
  }

  const client = newClient(args.target, { tls: args.tls, protosDir: args.protosDir });
  const output = {};
  let failed = false;
  try {
    for (const name of args.rpcs) {
      const rpc = RPCS[name];
      const onMessage = rpc.onMessage && ((m) => rpc.onMessage(m, args));
      try {
        const response = await invoke(client, rpc.method, rpc.request(args), args, onMessage);
        if (args.json) output[name] = rpc.toJson ? rpc.toJson(response) : response;
        else rpc.print(response);
      } catch (err) {
        const error = describeError(rpc.method, err);
        if (args.json) output.error = error;
        else printError(error);
        failed = true;
        break;
      }
    }
  } finally {
    client.close();
  }
  if (args.json) console.log(JSON.stringify(output, null, 2));
  return failed ? 1 : 0;
}

module.exports = {
  loadContract,
  newClient,
  invoke,
  unary,
  serverStream,
  decodeErrorDetails,
  summarizeStream,
  structToJson,
  LOADER_OPTIONS,
};

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      console.error(err && err.stack ? err.stack : err);
      process.exitCode = 1;
    },
  );
}
