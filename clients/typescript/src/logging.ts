/**
 * Plugging a Redactor into the loggers a Node executor uses.
 *
 * console:  const restore = redactConsole(resolution.redactor());   // ...later restore()
 * pino:     pino({ hooks: { streamWrite: redactingWrite(redactor) } })
 *           (pino hands every finished line, JSON-escaped, to streamWrite before writing it)
 */
import { format } from "node:util";

import type { Redactor } from "./redact.js";

const METHODS = ["log", "info", "warn", "error", "debug", "trace"] as const;
type Method = (typeof METHODS)[number];
type Target = Pick<Console, Method>;

function isPlain(value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * A copy of `value` with every string in it masked: strings, and those inside arrays, plain
 * objects, Maps and Sets (cycles kept). util.inspect prints a string inside an object escaped
 * its own way (`a\\b` for a backslash, `\x1B` for ESC), which is neither the value nor its JSON
 * escape, so masking only the formatted line would let such values through. Other objects
 * (errors, class instances) are left as they are; the formatted line is masked as well.
 */
function redactStrings(redactor: Pick<Redactor, "redact">, value: unknown, copies: Map<object, unknown>): unknown {
  if (typeof value === "string") return redactor.redact(value);
  if (value === null || typeof value !== "object") return value;
  const done = copies.get(value);
  if (done !== undefined) return done;
  const again = (item: unknown): unknown => redactStrings(redactor, item, copies);
  if (Array.isArray(value)) {
    const copy: unknown[] = [];
    copies.set(value, copy);
    for (const item of value) copy.push(again(item));
    return copy;
  }
  if (value instanceof Map) {
    const copy = new Map<unknown, unknown>();
    copies.set(value, copy);
    for (const [k, v] of value) copy.set(again(k), again(v));
    return copy;
  }
  if (value instanceof Set) {
    const copy = new Set<unknown>();
    copies.set(value, copy);
    for (const item of value) copy.add(again(item));
    return copy;
  }
  if (!isPlain(value)) return value;
  const copy = Object.create(Object.getPrototypeOf(value) as object | null) as Record<PropertyKey, unknown>;
  copies.set(value, copy);
  for (const key of Reflect.ownKeys(value)) {
    if (Object.prototype.propertyIsEnumerable.call(value, key)) {
      Object.defineProperty(copy, key, { value: again((value as Record<PropertyKey, unknown>)[key]), enumerable: true, writable: true, configurable: true });
    }
  }
  return copy;
}

/**
 * Makes console.log/info/warn/error/debug/trace format their arguments as usual (util.format,
 * so objects and errors with their stacks included) and mask the redactor's values before
 * writing: in the strings of the arguments (and of the arrays, plain objects, Maps and Sets in
 * them) and in the formatted line. Returns a function that puts the original methods back.
 * console.dir, console.table and console.assert are not wrapped.
 */
export function redactConsole(redactor: Pick<Redactor, "redact">, target: Target = console): () => void {
  const originals = new Map<Method, Target[Method]>();
  for (const name of METHODS) {
    const original = target[name];
    originals.set(name, original);
    target[name] = (...args: unknown[]): void => {
      const copies = new Map<object, unknown>();
      original.call(target, redactor.redact(format(...args.map((arg) => redactStrings(redactor, arg, copies)))));
    };
  }
  return () => {
    for (const [name, original] of originals) target[name] = original;
  };
}

/** For pino's `hooks.streamWrite`: every line pino writes, masked. */
export function redactingWrite(redactor: Pick<Redactor, "redact">): (line: string) => string {
  return (line) => redactor.redact(line);
}
