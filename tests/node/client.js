// A Node.js application calling Hapax the way an app developer would: @grpc/proto-loader loads
// protos/hapax/v1/completion_service.proto, @grpc/grpc-js makes the calls.
//
//   NODE_PATH=tools/node_modules node tests/node/client.js ADDRESS PROMPT
//
// Prints one JSON object: {unary, stream, invalid}. tests/e2e/test_node_client.py asserts on it.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [address, prompt] = process.argv.slice(2);
if (!address || !prompt) {
  console.error('usage: client.js ADDRESS PROMPT');
  process.exit(2);
}

const definition = protoLoader.loadSync('hapax/v1/completion_service.proto', {
  includeDirs: [path.resolve(__dirname, '..', '..', 'protos')],
  keepCase: false, // camelCase fields, as JavaScript callers expect
  enums: String,
  longs: String,
  defaults: true,
  oneofs: true,
});
const hapax = grpc.loadPackageDefinition(definition).hapax.v1;
const client = new hapax.CompletionService(address, grpc.credentials.createInsecure());

function deadline() {
  return new Date(Date.now() + 20000);
}

function complete(request, metadata = new grpc.Metadata()) {
  return new Promise((resolve, reject) => {
    client.Complete(request, metadata, { deadline: deadline() }, (err, reply) =>
      err ? reject(err) : resolve(reply));
  });
}

function streamComplete(request) {
  return new Promise((resolve, reject) => {
    const messages = [];
    const call = client.StreamComplete(request, { deadline: deadline() });
    call.on('data', (message) => messages.push(message));
    call.on('error', reject);
    call.on('end', () => resolve(messages));
  });
}

async function main() {
  const metadata = new grpc.Metadata();
  metadata.set('x-request-id', 'node-client-1');
  const unary = await complete({ prompt, metadata: { team: 'node' } }, metadata);
  const stream = await streamComplete({
    messages: [{ role: 'ROLE_USER', content: prompt }],
    temperature: 0,
  });
  let invalid = null;
  try {
    await complete({});
  } catch (err) {
    invalid = { code: err.code, status: grpc.status[err.code], details: err.details };
  }
  console.log(JSON.stringify({ unary, stream, invalid }));
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => client.close());
