/** Child process of log.test.ts: append `n` pairs of records to a log, as a signing command would. */
import { AuditLog } from '../../src/audit/log.js';
import { fakeEvent } from './_events.js';

const [path, worker, n] = process.argv.slice(2) as [string, string, string];
const log = await AuditLog.open(path);
for (let i = 0; i < Number(n); i++)
  await log.append([fakeEvent(`${worker}-${i}-a`), fakeEvent(`${worker}-${i}-b`)]);
