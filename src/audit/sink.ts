/**
 * The pipeline's audit sink over a writer (the local log, or the service's Redis stream): each produced
 * locale becomes its records (record.ts `localeEvents`), appended in one call, so a locale's records
 * are written together or not at all.
 */
import { fromPlainError, toPlainError } from '../errors.js';
import { localeEvents } from './record.js';
import type { AuditEvent, AuditSink, AuditWriter, LocaleAuditRun } from './types.js';

export class AuditRecorder implements AuditSink {
  constructor(readonly writer: AuditWriter) {}

  async ready(): Promise<void> {
    await this.writer.ready?.();
  }

  /** Append the locale's records; a failure names the output that is now written but not audited. */
  locale(run: LocaleAuditRun): Promise<void> {
    return this.record(localeEvents(run), run.manifest.output);
  }

  /** Append the records of what was written to `output` (sign-pe, sign-mar), or fail naming it. */
  async record(events: readonly AuditEvent[], output: string): Promise<void> {
    try {
      await this.writer.append(events);
    } catch (err) {
      const p = toPlainError(err);
      const code = p.code.startsWith('AUDIT_') ? p.code : 'AUDIT_WRITE_FAILED';
      throw fromPlainError({
        ...p,
        name: p.name === 'Error' ? 'TransientError' : p.name,
        code,
        message: `${output} was written but its audit records were not: ${p.message}`,
        details: { ...p.details, output },
      });
    }
  }
}
