/**
 * Masking resolved secret values in text an executor is about to log or show.
 *
 * The same behaviour as the Python client's `secrets_client.redact` (both run the shared vectors
 * in clients/testdata/redaction_vectors.json). A value is masked as itself, line by line (each
 * line of a multi-line value, such as a PEM key), and in the encodings a value commonly takes on
 * its way into a log: base64 (standard and URL-safe, at every alignment within a longer encoded
 * string), URL-encoding (%XX and +) and JSON string escaping.
 *
 * The shortest value (or line, or encoded form) masked is MIN_MASKED_LENGTH = 4 characters
 * (Unicode code points, as Python counts them). Shorter strings are left alone on purpose:
 * masking "on", "1" or "{" would rewrite ordinary words and numbers all over a log and, by the
 * holes it leaves, tell a reader where the secret appeared; and a secret that short is guessable
 * whatever a redactor does.
 */

export const MIN_MASKED_LENGTH = 4;
export const MASK = "[REDACTED]";

/** Length in Unicode code points (Python's len() of a str). */
export function codePointLength(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

// Python's str.splitlines() boundaries and str.strip() whitespace, so that the lines of a value
// are exactly the Python client's.
const LINE_BREAK = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/u;
const PY_WHITESPACE = /^[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/u;

function splitLines(value: string): string[] {
  const lines = value.split(LINE_BREAK);
  // splitlines() gives no empty last line for a trailing break (and [] for "").
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  return lines;
}

// urllib.parse.quote(value, safe=""): every UTF-8 byte but A-Z a-z 0-9 _ . - ~ as %XX.
function quote(value: string, plus: boolean): string {
  let out = "";
  for (const byte of Buffer.from(value, "utf8")) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9_.\-~]/.test(c)) out += c;
    else if (plus && c === " ") out += "+";
    else out += "%" + byte.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

// json.dumps(value)[1:-1], with ensure_ascii (the default) or without.
function jsonEscape(value: string, ensureAscii: boolean): string {
  const named: Record<string, string> = { '"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f" };
  let out = "";
  for (let i = 0; i < value.length; i++) {
    const c = value[i] as string;
    const unit = value.charCodeAt(i);
    const name = named[c];
    if (name !== undefined) out += name;
    else if (unit < 0x20 || (ensureAscii && unit > 0x7e)) out += "\\u" + unit.toString(16).padStart(4, "0");
    else out += c;
  }
  return out;
}

function base64(bytes: Buffer, urlsafe: boolean): string {
  const encoded = bytes.toString("base64");
  return urlsafe ? encoded.replace(/\+/g, "-").replace(/\//g, "_") : encoded;
}

/** Every form of `value` the redactor masks (those of at least MIN_MASKED_LENGTH code points). */
export function maskedForms(value: string): Set<string> {
  const forms = new Set<string>([value]);
  for (const line of splitLines(value)) if (!PY_WHITESPACE.test(line)) forms.add(line);
  const raw = Buffer.from(value, "utf8");
  for (let offset = 0; offset < 3; offset++) {
    const tail = raw.subarray(offset);
    for (const urlsafe of [false, true]) {
      const encoded = base64(tail, urlsafe);
      // Inside a longer base64 string, wherever the value starts, the 3-byte groups that lie
      // wholly inside it encode to exactly these characters for one of the offsets.
      forms.add(encoded.slice(0, 4 * Math.floor(tail.length / 3)));
      if (offset === 0) forms.add(encoded);
    }
  }
  forms.add(quote(value, false));
  forms.add(quote(value, true));
  forms.add(jsonEscape(value, true));
  forms.add(jsonEscape(value, false));
  return new Set([...forms].filter((f) => codePointLength(f) >= MIN_MASKED_LENGTH));
}

const SYNTAX = /[\\^$.*+?()[\]{}|/]/g;

/** Masks the values it was given, in every form above, in any text. */
export class Redactor {
  #forms = new Set<string>();
  #pattern: RegExp | null = null;

  constructor(values: Iterable<string> = []) {
    this.add(values);
  }

  add(values: Iterable<string>): void {
    for (const value of values) for (const form of maskedForms(value)) this.#forms.add(form);
    // Longest first, so a value is masked whole before any of its lines or parts.
    const ordered = [...this.#forms].sort((a, b) => codePointLength(b) - codePointLength(a));
    this.#pattern = ordered.length ? new RegExp(ordered.map((f) => f.replace(SYNTAX, "\\$&")).join("|"), "gu") : null;
  }

  /** How many forms it masks. */
  get size(): number {
    return this.#forms.size;
  }

  redact(text: string): string {
    if (this.#pattern === null) return text;
    return text.replace(this.#pattern, () => MASK);
  }

  toString(): string {
    return `Redactor(${this.#forms.size} forms)`;
  }

  /** Shown by console.log and util.inspect: the count, never a value. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toString();
  }

  toJSON(): string {
    return this.toString();
  }
}
