/**
 * The signing policy: which MAR entries are Authenticode-signed. Globs are picomatch patterns matched
 * against the whole entry name (MAR names use `/`). Matching is case-insensitive because the names
 * become Windows paths, where `FOO.DLL` and `foo.dll` are the same file.
 */
import picomatch from 'picomatch';
import { DEFAULT_POLICY, type PolicyFile } from '../config/types.js';
import { ConfigError } from '../errors.js';
import type { PipelineErrorCode } from './types.js';

export type PolicyDecision = 'sign' | 'passthrough';

export interface CompiledPolicy {
  readonly include: readonly string[];
  readonly exclude: readonly string[];
  readonly onInvalid: 'error' | 'skip';
  /** Whether passthrough entries are checked before the container is signed (config, default true). */
  readonly verifyPassthrough: boolean;
  decide(entryName: string): PolicyDecision;
}

const GLOB_OPTIONS: picomatch.PicomatchOptions = { nocase: true, dot: true };

export function compilePolicy(policy: PolicyFile | undefined): CompiledPolicy {
  const include = policy?.include ?? DEFAULT_POLICY.include;
  const exclude = policy?.exclude ?? DEFAULT_POLICY.exclude;
  const onInvalid = policy?.onInvalid ?? DEFAULT_POLICY.onInvalid;
  const verifyPassthrough = policy?.verifyPassthrough ?? DEFAULT_POLICY.verifyPassthrough;
  for (const [what, list] of [
    ['include', include],
    ['exclude', exclude],
  ] as const) {
    if (!Array.isArray(list) || list.some((g) => typeof g !== 'string' || g.length === 0))
      throw new ConfigError(
        'CONFIG_BAD_POLICY' satisfies PipelineErrorCode,
        `policy.${what} must be an array of non-empty glob strings, found ${JSON.stringify(list)}`,
      );
  }
  if (onInvalid !== 'error' && onInvalid !== 'skip')
    throw new ConfigError(
      'CONFIG_BAD_POLICY' satisfies PipelineErrorCode,
      `policy.onInvalid must be "error" or "skip", found ${JSON.stringify(onInvalid)}`,
    );
  if (typeof verifyPassthrough !== 'boolean')
    throw new ConfigError(
      'CONFIG_BAD_POLICY' satisfies PipelineErrorCode,
      `policy.verifyPassthrough must be true or false, found ${JSON.stringify(verifyPassthrough)}`,
    );
  const inc = include.length ? picomatch(include, GLOB_OPTIONS) : () => false;
  const exc = exclude.length ? picomatch(exclude, GLOB_OPTIONS) : () => false;
  return {
    include,
    exclude,
    onInvalid,
    verifyPassthrough,
    decide: (name) => (inc(name) && !exc(name) ? 'sign' : 'passthrough'),
  };
}
