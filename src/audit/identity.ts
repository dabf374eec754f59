import { userInfo } from 'node:os';

/**
 * Who the CLI acts for — in audit records, and as the submitter `marsign enqueue` records: `cli:<user>`
 * (the OS user; API client names cannot hold a ':').
 */
export function cliClient(): string {
  let user: string | undefined;
  try {
    user = userInfo().username;
  } catch {
    user = process.env.USER ?? process.env.LOGNAME;
  }
  const clean = (user ?? '').replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64);
  return `cli:${clean || `uid-${process.getuid?.() ?? 'unknown'}`}`;
}
