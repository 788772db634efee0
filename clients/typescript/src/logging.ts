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

/**
 * Makes console.log/info/warn/error/debug/trace format their arguments as usual (util.format,
 * so objects and errors with their stacks included) and mask the redactor's values before
 * writing. Returns a function that puts the original methods back.
 */
export function redactConsole(redactor: Pick<Redactor, "redact">, target: Target = console): () => void {
  const originals = new Map<Method, Target[Method]>();
  for (const name of METHODS) {
    const original = target[name];
    originals.set(name, original);
    target[name] = (...args: unknown[]): void => {
      original.call(target, redactor.redact(format(...args)));
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
