/**
 * The signing policy: which MAR entries are Authenticode-signed. Globs are picomatch patterns matched
 * against the whole entry name (MAR names use `/`). Matching is case-insensitive because the names
 * become Windows paths, where `FOO.DLL` and `foo.dll` are the same file.
 */
import picomatch from 'picomatch';
import { DEFAULT_POLICY, type PolicyFile } from '../config/types.js';
import { ConfigError } from '../errors.js';

export type PolicyDecision = 'sign' | 'passthrough';

export interface CompiledPolicy {
  readonly include: readonly string[];
  readonly exclude: readonly string[];
  readonly onInvalid: 'error' | 'skip';
  decide(entryName: string): PolicyDecision;
}

const GLOB_OPTIONS: picomatch.PicomatchOptions = { nocase: true, dot: true };

export function compilePolicy(policy: PolicyFile | undefined): CompiledPolicy {
  const include = policy?.include ?? DEFAULT_POLICY.include;
  const exclude = policy?.exclude ?? DEFAULT_POLICY.exclude;
  const onInvalid = policy?.onInvalid ?? DEFAULT_POLICY.onInvalid;
  for (const [what, list] of [
    ['include', include],
    ['exclude', exclude],
  ] as const) {
    if (!Array.isArray(list) || list.some((g) => typeof g !== 'string' || g.length === 0))
      throw new ConfigError(
        'CONFIG_BAD_POLICY',
        `policy.${what} must be an array of non-empty glob strings, found ${JSON.stringify(list)}`,
      );
  }
  if (onInvalid !== 'error' && onInvalid !== 'skip')
    throw new ConfigError(
      'CONFIG_BAD_POLICY',
      `policy.onInvalid must be "error" or "skip", found ${JSON.stringify(onInvalid)}`,
    );
  const inc = include.length ? picomatch(include, GLOB_OPTIONS) : () => false;
  const exc = exclude.length ? picomatch(exclude, GLOB_OPTIONS) : () => false;
  return {
    include,
    exclude,
    onInvalid,
    decide: (name) => (inc(name) && !exc(name) ? 'sign' : 'passthrough'),
  };
}
