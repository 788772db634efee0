#!/usr/bin/env node
// Resolves workflow inputs through secrets.v1.Resolver with @grpc/grpc-js and @grpc/proto-loader,
// loading the contract straight from protos/ (no generated code).
//
//   SECRETS_ADDRESS=127.0.0.1:50051 SECRETS_TOKEN=<executor token> node resolve.js request.json
//
// request.json is a ResolveInputsRequest in proto-JSON form; the response is printed as JSON.
// Each reference's `start` and `end` say where its value is in the resolved string at its
// `field_path`, in Unicode code points (resolver.proto): `Array.from(s).slice(start, end).join('')`,
// not `s.slice(start, end)` (JavaScript strings index UTF-16 code units). Mask exactly those
// substrings in logs.
// Exit code 0 on success; 1 with "<STATUS>: <message>" on stderr for a gRPC error.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'protos');

function loadResolver() {
  const definition = protoLoader.loadSync('secrets/v1/resolver.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).secrets.v1.Resolver;
}

// google.protobuf.Struct as plain JSON, both ways: proto-loader sees Struct as a message. The
// well-known types come from protobufjs's bundled definitions, whose field names are camelCase
// whatever keepCase says.
function toValue(v) {
  if (v === null) return { nullValue: 'NULL_VALUE' };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  switch (typeof v) {
    case 'string': return { stringValue: v };
    case 'number': return { numberValue: v };
    case 'boolean': return { boolValue: v };
    default: return { structValue: toStruct(v) };
  }
}
function toStruct(obj) {
  const fields = {};
  for (const [k, v] of Object.entries(obj)) fields[k] = toValue(v);
  return { fields };
}
function fromValue(v) {
  switch (v.kind) {
    case 'nullValue': return null;
    case 'listValue': return (v.listValue.values || []).map(fromValue);
    case 'structValue': return fromStruct(v.structValue);
    case undefined: return undefined;
    default: return v[v.kind];
  }
}
function fromStruct(s) {
  const out = {};
  for (const [k, v] of Object.entries((s && s.fields) || {})) out[k] = fromValue(v);
  return out;
}

function main() {
  const address = process.env.SECRETS_ADDRESS || '127.0.0.1:50051';
  const token = process.env.SECRETS_TOKEN;
  if (!token || process.argv.length < 3) {
    console.error('usage: SECRETS_TOKEN=<executor token> [SECRETS_ADDRESS=host:port] node resolve.js request.json');
    process.exit(2);
  }
  const request = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  request.blocks = (request.blocks || []).map((b) => ({ ...b, inputs: toStruct(b.inputs || {}) }));

  const Resolver = loadResolver();
  const client = new Resolver(address, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  const deadline = new Date(Date.now() + 10000);
  client.ResolveInputs(request, metadata, { deadline }, (err, response) => {
    client.close();
    if (err) {
      console.error(`${grpc.status[err.code]}: ${err.details}`);
      process.exit(1);
    }
    const blocks = response.blocks.map((b) => ({
      block_id: b.block_id,
      ...(b.error ? { error: b.error } : { inputs: fromStruct(b.inputs), references: b.references }),
    }));
    console.log(JSON.stringify({ run_user_id: response.run_user_id, blocks }, null, 2));
  });
}

main();
