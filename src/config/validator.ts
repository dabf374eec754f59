/**
 * The config validator's primitives (CONVENTIONS §10): every rule names the field path; values are quoted
 * only when they cannot be secrets. Used by validate.ts and by the key backends' own sections
 * (src/keys/registry.ts), which is why it lives apart from validate.ts (no import cycle).
 */
import { ConfigError } from '../errors.js';
import { configError } from './errors.js';

export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export type Obj = Record<string, unknown>;

export class Validator {
  constructor(private readonly file: string) {}

  fail(path: string, rule: string): never {
    throw configError('CONFIG_INVALID', `${this.file}: ${path} ${rule}`, { details: { field: path } });
  }

  /** Like fail, with a backend's own code (`PKCS11_URI_INVALID`): typed by the backend, so `string` here. */
  failWith(code: string, path: string, rule: string): never {
    throw new ConfigError(code, `${this.file}: ${path}: ${rule}`, { details: { field: path } });
  }

  describe(v: unknown): string {
    if (v === null) return 'null';
    if (Array.isArray(v)) return 'an array';
    if (typeof v === 'object') return 'an object';
    if (typeof v === 'string') return `a string`;
    return `${typeof v} ${String(v)}`;
  }

  object(v: unknown, path: string, allowed: readonly string[]): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      this.fail(path, `must be an object, got ${this.describe(v)}`);
    for (const k of Object.keys(v)) {
      if (k.startsWith('$') || k.startsWith('//')) continue; // "$schema", "//" comments
      if (!allowed.includes(k))
        this.fail(path === '' ? k : `${path}.${k}`, `is not a known field (known: ${allowed.join(', ')})`);
    }
    return v as Obj;
  }

  string(
    o: Obj,
    key: string,
    path: string,
    opts: { required?: boolean; pattern?: RegExp; what?: string } = {},
  ): string | undefined {
    const v = o[key];
    const p = `${path}.${key}`;
    if (v === undefined) {
      if (opts.required) this.fail(p, 'is required');
      return undefined;
    }
    if (typeof v !== 'string' || v.length === 0)
      this.fail(p, `must be a non-empty string, got ${this.describe(v)}`);
    if (opts.pattern && !opts.pattern.test(v))
      this.fail(p, `must be ${opts.what ?? `like ${String(opts.pattern)}`}`);
    return v;
  }

  enumOf<T extends string>(o: Obj, key: string, path: string, values: readonly T[]): T | undefined {
    const v = o[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !values.includes(v as T)) {
      this.fail(
        `${path}.${key}`,
        `must be one of ${values.map((x) => `"${x}"`).join(', ')}, got ${typeof v === 'string' ? JSON.stringify(v.slice(0, 32)) : this.describe(v)}`,
      );
    }
    return v as T;
  }

  bool(o: Obj, key: string, path: string): boolean | undefined {
    const v = o[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') this.fail(`${path}.${key}`, `must be true or false, got ${this.describe(v)}`);
    return v;
  }

  int(o: Obj, key: string, path: string, min: number, max: number): number | undefined {
    const v = o[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.fail(`${path}.${key}`, `must be an integer in [${min}, ${max}], got ${this.describe(v)}`);
    }
    return v;
  }

  stringArray(
    o: Obj,
    key: string,
    path: string,
    opts: { required?: boolean; min?: number; max?: number } = {},
  ): string[] | undefined {
    const v = o[key];
    const p = `${path}.${key}`;
    if (v === undefined) {
      if (opts.required) this.fail(p, 'is required');
      return undefined;
    }
    if (!Array.isArray(v)) this.fail(p, `must be an array of strings, got ${this.describe(v)}`);
    v.forEach((x, i) => {
      if (typeof x !== 'string' || x.length === 0)
        this.fail(`${p}[${i}]`, `must be a non-empty string, got ${this.describe(x)}`);
    });
    if (opts.min !== undefined && v.length < opts.min)
      this.fail(p, `must list at least ${opts.min} item(s), got ${v.length}`);
    if (opts.max !== undefined && v.length > opts.max)
      this.fail(p, `must list at most ${opts.max} items, got ${v.length}`);
    return v as string[];
  }

  /** `xEnv` / `xFile`: at most one of the two. */
  secretRef(o: Obj, base: string, path: string): void {
    this.string(o, `${base}Env`, path, { pattern: ENV_NAME, what: 'an environment variable name' });
    this.string(o, `${base}File`, path);
    if (o[`${base}Env`] !== undefined && o[`${base}File`] !== undefined) {
      this.fail(`${path}.${base}Env`, `and ${path}.${base}File are exclusive: give one`);
    }
  }
}
