// The Redactor against the shared vectors (clients/testdata/redaction_vectors.json), which the
// Python client's tests run too, and the logger hooks.
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";

import { create } from "@bufbuild/protobuf";
import { pino } from "pino";

import {
  MASK,
  MIN_MASKED_LENGTH,
  Redactor,
  SecretsError,
  redactConsole,
  redactingWrite,
  resolutionFromResponse,
} from "../src/index.js";
import { Scope } from "../src/gen/secrets/v1/common_pb.js";
import { ResolveInputsResponseSchema } from "../src/gen/secrets/v1/resolver_pb.js";
import { document, type Case } from "./vectors.js";

function responseFor(c: Case) {
  return create(ResolveInputsResponseSchema, {
    runUserId: "u",
    blocks: [
      {
        blockId: "b",
        inputs: c.resolved,
        references: c.references.map((r) => ({
          fieldPath: r.field_path,
          key: r.key,
          scope: Scope.WORKSPACE,
          version: 1n,
          start: r.start,
          end: r.end,
        })),
      },
    ],
  });
}

describe("shared redaction vectors", () => {
  it("agree with the library constants", () => {
    assert.equal(document.mask, MASK);
    assert.equal(document.min_masked_length, MIN_MASKED_LENGTH);
    assert.ok(document.cases.length >= 10);
  });

  for (const c of document.cases) {
    it(c.name, () => {
      const resolution = resolutionFromResponse(responseFor(c));
      const block = resolution.blocks["b"];
      assert.ok(block?.ok);
      assert.deepEqual(block.inputs, c.resolved);
      assert.deepEqual(
        block.references.map((r) => ({ field_path: r.fieldPath, key: r.key, start: r.start, end: r.end })),
        c.references,
      );
      const redactor = resolution.redactor();
      for (const item of c.redact) assert.equal(redactor.redact(item.text), item.expected, item.text);
    });
  }
});

describe("Redactor", () => {
  const VALUE = 'pa55:word/with+odd=chars&more"quotes"';

  it("masks the value and its encodings at any alignment", () => {
    const r = new Redactor([VALUE]);
    const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
    for (const prefix of ["", "x", "xy", "xyz"]) {
      for (const text of [
        `header ${prefix}${VALUE} end`,
        b64(prefix + VALUE + "tail"),
        b64(prefix + VALUE).replace(/\+/g, "-").replace(/\//g, "_"),
        JSON.stringify({ k: prefix + VALUE }),
      ]) {
        const out = r.redact(text);
        assert.ok(out.includes(MASK), text);
        assert.ok(!out.includes(VALUE));
        assert.ok(!out.includes(b64(VALUE).slice(0, -4)));
      }
    }
  });

  it("leaves values shorter than the minimum alone, and counts code points", () => {
    assert.equal(new Redactor(["abc", "abcd"]).redact("abc xabcdx"), `abc x${MASK}x`);
    // Two astral characters are four UTF-16 units but two code points: too short to mask.
    assert.equal(new Redactor(["🔑🔑"]).redact("k=🔑🔑"), "k=🔑🔑");
    assert.equal(new Redactor(["🔑🔑🔑🔑"]).redact("k=🔑🔑🔑🔑"), `k=${MASK}`);
  });

  it("shows no value when printed", () => {
    const r = new Redactor(["super-secret-value"]);
    assert.ok(!String(r).includes("super-secret"));
    assert.ok(!JSON.stringify({ r }).includes("super-secret"));
    assert.match(String(r), /^Redactor\(\d+ forms\)$/);
  });

  it("refuses to build from a response without offsets", () => {
    const reply = create(ResolveInputsResponseSchema, {
      blocks: [{ blockId: "b", inputs: { a: "user:pass-word" }, references: [{ fieldPath: "a", key: "USER", version: 1n }] }],
    });
    assert.throws(() => resolutionFromResponse(reply), (err: unknown) => {
      assert.ok(err instanceof SecretsError);
      assert.equal(err.code, "UNIMPLEMENTED");
      assert.match(err.message, /"USER"/);
      return true;
    });
  });
});

describe("logger hooks", () => {
  const secret = "tok-1234567890";
  const redactor = new Redactor([secret]);

  it("redactConsole masks messages, arguments and errors, and restores", () => {
    const lines: string[] = [];
    const push = (...args: unknown[]): void => void lines.push(args.map(String).join(" "));
    const fake: Pick<Console, "log" | "info" | "warn" | "error" | "debug" | "trace"> = {
      log: push, info: push, warn: push, error: push, debug: push, trace: push,
    };
    const original = fake.log;
    const restore = redactConsole(redactor, fake);
    fake.log("calling with %s", secret);
    fake.warn(`inline ${secret}`, { headers: { authorization: `Bearer ${secret}` } });
    fake.error(new Error(`bad token ${secret}`));
    restore();
    assert.equal(fake.log, original);
    const out = lines.join("\n");
    assert.ok(!out.includes(secret), out);
    assert.equal(out.split(MASK).length - 1, 4);
    assert.ok(out.includes("Error: bad token"));
  });

  it("redactConsole masks values in objects, whose strings util.inspect escapes", () => {
    // util.inspect prints a\\b for a backslash and \\x1B for ESC: neither the raw value nor its
    // JSON escape, so masking only the formatted line let these through.
    const values = ["C:\\Users\\svc\\pass-1", "esc\u001bseq-2", "quote'and\"both\\3"];
    const multi = new Redactor(values);
    const lines: string[] = [];
    const push = (...args: unknown[]): void => void lines.push(args.map(String).join(" "));
    const fake: Pick<Console, "log" | "info" | "warn" | "error" | "debug" | "trace"> = {
      log: push, info: push, warn: push, error: push, debug: push, trace: push,
    };
    const restore = redactConsole(multi, fake);
    const inputs: Record<string, unknown> = { headers: { a: values[0] }, list: [values[1], { deep: values[2] }] };
    inputs["self"] = inputs;
    fake.log("inputs:", inputs);
    fake.info("%o", { values });
    fake.warn(new Map([["k", values[0]]]), new Set([values[1]]));
    restore();
    const out = lines.join("\n");
    for (const text of ["Users", "svc", "seq-2", "both", "x1B"]) assert.ok(!out.includes(text), out);
    assert.ok(out.includes("[Circular *1]"), out);
    assert.equal(inputs["headers"] && (inputs["headers"] as Record<string, string>)["a"], values[0]);
  });

  it("pino's streamWrite hook masks every line", () => {
    let written = "";
    const sink = new Writable({ write(chunk, _enc, done) { written += String(chunk); done(); } });
    const log = pino({ hooks: { streamWrite: redactingWrite(redactor) } }, sink);
    log.info({ headers: { authorization: `Bearer ${secret}` } }, `resolved ${secret}`);
    log.error(new Error(`failed with ${secret}`));
    assert.ok(written.length > 0);
    assert.ok(!written.includes(secret), written);
    assert.ok(written.split(MASK).length - 1 >= 4, written); // message, header, error message and stack
  });
});
