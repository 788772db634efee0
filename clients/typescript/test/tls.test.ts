// TLS and mutual TLS: tests/typescript/test_typescript_client.py starts the servers with a PKI it
// makes (CA, server, client, and a rogue client from another CA) and passes the addresses and
// the PEM files as SECRETS_TLS_ADDRESS, SECRETS_MTLS_ADDRESS and SECRETS_PKI_<NAME>.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { OpsClient, SecretsError, Unavailable } from "../src/index.js";

const env = process.env;
const pem = (name: string): Buffer => readFileSync(env[`SECRETS_PKI_${name}`] ?? "");
const token = (JSON.parse(env["SECRETS_TOKENS"] ?? "{}") as Record<string, string>)["ops"] ?? "";
// Failures to connect are UNAVAILABLE; no retries, so each refusal is seen at once.
const quick = { retry: false as const, timeoutMs: 5000 };

async function refused(client: OpsClient): Promise<void> {
  try {
    await assert.rejects(client.keyStatus(), (err: unknown) => {
      assert.ok(err instanceof Unavailable, String(err));
      return true;
    });
  } finally {
    client.close();
  }
}

describe("TLS", { skip: env["SECRETS_TLS_ADDRESS"] ? false : "SECRETS_TLS_ADDRESS is not set" }, () => {
  const address = env["SECRETS_TLS_ADDRESS"] ?? "";

  it("serves a client that trusts the CA", async () => {
    const ops = new OpsClient(address, token, { tls: { ca: pem("CA_CERT") } });
    try {
      assert.equal((await ops.keyStatus()).primaryKeyId, "k1");
    } finally {
      ops.close();
    }
  });

  it("is refused by a client that trusts only the system roots", async () => {
    // Node's TLS refuses the handshake itself; the error says why (not retried: it would not pass later).
    const ops = new OpsClient(address, token, { tls: true, ...quick });
    try {
      await assert.rejects(ops.keyStatus(), (err: unknown) => {
        assert.ok(err instanceof SecretsError, String(err));
        assert.match(err.message, /certificate/);
        return true;
      });
    } finally {
      ops.close();
    }
  });

  it("refuses plaintext", async () => {
    await refused(new OpsClient(address, token, { ...quick }));
  });
});

describe("mutual TLS", { skip: env["SECRETS_MTLS_ADDRESS"] ? false : "SECRETS_MTLS_ADDRESS is not set" }, () => {
  const address = env["SECRETS_MTLS_ADDRESS"] ?? "";

  it("serves a client with a certificate from the CA", async () => {
    const ops = new OpsClient(address, token, { tls: { ca: pem("CA_CERT"), cert: pem("CLIENT_CERT"), key: pem("CLIENT_KEY") } });
    try {
      assert.equal((await ops.keyStatus()).primaryKeyId, "k1");
    } finally {
      ops.close();
    }
  });

  it("refuses a client without a certificate", async () => {
    await refused(new OpsClient(address, token, { tls: { ca: pem("CA_CERT") }, ...quick }));
  });

  it("refuses a client certificate from another CA", async () => {
    await refused(new OpsClient(address, token, { tls: { ca: pem("CA_CERT"), cert: pem("ROGUE_CERT"), key: pem("ROGUE_KEY") }, ...quick }));
  });
});
