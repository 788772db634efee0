/** What a resolve returns: each block's inputs or error, and a redactor for the values used. */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";

import { SecretsError } from "./errors.js";
import { Redactor, codePointLength } from "./redact.js";
import { BlockErrorCode, Scope } from "./gen/secrets/v1/common_pb.js";
import type { ResolveInputsResponse } from "./gen/secrets/v1/resolver_pb.js";

export type ScopeName = "workspace" | "personal";

export interface Reference {
  /** The string that held the reference: `headers.Authorization`, `list[0]`, `headers["X-Api.Key"]`. */
  readonly fieldPath: string;
  readonly key: string;
  readonly scope: ScopeName;
  readonly version: bigint;
  /**
   * Where the value is in the resolved string at fieldPath, in Unicode code points, end
   * exclusive: `Array.from(text).slice(start, end).join("")`. Never empty: end > start.
   */
  readonly start: number;
  readonly end: number;
}

export interface BlockError {
  /** "SECRET_NOT_FOUND", "SECRET_NOT_PERMITTED", or a code added by a later service. */
  readonly code: string;
  readonly key: string;
  readonly fieldPath: string;
  /** Names the block, the field path and the key; never a value. */
  readonly message: string;
}

export type ResolvedBlock =
  | { readonly blockId: string; readonly ok: true; readonly inputs: JsonObject; readonly references: readonly Reference[] }
  | { readonly blockId: string; readonly ok: false; readonly error: BlockError };

export class Resolution {
  readonly runUserId: string;
  readonly blocks: Readonly<Record<string, ResolvedBlock>>;
  readonly #values: readonly string[];

  constructor(runUserId: string, blocks: Record<string, ResolvedBlock>, values: readonly string[]) {
    this.runUserId = runUserId;
    this.blocks = blocks;
    this.#values = values;
  }

  /** A Redactor for the values this resolution put into the inputs. */
  redactor(): Redactor {
    return new Redactor(this.#values);
  }

  /** Shown by console.log and util.inspect: block ids, never the resolved inputs. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `Resolution(runUserId=${JSON.stringify(this.runUserId)}, blocks=${JSON.stringify(Object.keys(this.blocks))})`;
  }
}

// The service's field path syntax (service/api/inputs.py): `headers.Authorization`,
// `messages[2].content`, `headers["X-Api.Key"]`.
const PLAIN_NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;

function segment(name: string, first: boolean): string {
  if (PLAIN_NAME.test(name)) return first ? name : `.${name}`;
  return `["${name.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"]`;
}

/** Every string in resolved inputs with its field path. */
export function stringsByPath(inputs: JsonObject): Map<string, string> {
  const found = new Map<string, string>();
  const stack: Array<[JsonValue, string]> = [[inputs, ""]];
  while (stack.length) {
    const [value, path] = stack.pop() as [JsonValue, string];
    if (typeof value === "string") found.set(path, value);
    else if (Array.isArray(value)) value.forEach((item, i) => stack.push([item, `${path}[${i}]`]));
    else if (value !== null && typeof value === "object") {
      for (const [name, item] of Object.entries(value)) stack.push([item, path + segment(name, path === "")]);
    }
  }
  return found;
}

/** The values the service put into `inputs`, cut where it says each one is. */
function valuesUsed(inputs: JsonObject, references: readonly Reference[]): string[] {
  const strings = stringsByPath(inputs);
  return references.map((r) => {
    const text = strings.get(r.fieldPath);
    if (text === undefined || !(0 <= r.start && r.start < r.end && r.end <= codePointLength(text))) {
      // A server that predates the offsets (or a broken response): a redactor built from
      // guesses would miss values silently, so none is built at all.
      throw new SecretsError(
        `the service did not say where the value of ${JSON.stringify(r.key)} is in ${JSON.stringify(r.fieldPath)} ` +
          `(start ${r.start}, end ${r.end}); this client needs a service that reports it`,
        "UNIMPLEMENTED",
      );
    }
    return Array.from(text).slice(r.start, r.end).join("");
  });
}

function scopeName(scope: Scope): ScopeName {
  return scope === Scope.PERSONAL ? "personal" : "workspace";
}

/**
 * A Resolution from the service's ResolveInputsResponse: each block's inputs and references,
 * and the values for the redactor, each cut from its string where the response says it is.
 */
export function resolutionFromResponse(reply: ResolveInputsResponse): Resolution {
  // No prototype: a block id such as "__proto__" is an ordinary key.
  const blocks = Object.create(null) as Record<string, ResolvedBlock>;
  const values = new Set<string>();
  for (const b of reply.blocks) {
    if (b.error !== undefined) {
      const e = b.error;
      const code = BlockErrorCode[e.code] ?? `CODE_${e.code}`;
      blocks[b.blockId] = {
        blockId: b.blockId,
        ok: false,
        error: { code, key: e.key, fieldPath: e.fieldPath, message: e.message },
      };
      continue;
    }
    const references: Reference[] = b.references.map((r) => ({
      fieldPath: r.fieldPath,
      key: r.key,
      scope: scopeName(r.scope),
      version: r.version,
      start: r.start,
      end: r.end,
    }));
    const inputs = b.inputs ?? {};
    for (const value of valuesUsed(inputs, references)) values.add(value);
    blocks[b.blockId] = { blockId: b.blockId, ok: true, inputs, references };
  }
  return new Resolution(reply.runUserId, blocks, [...values]);
}
