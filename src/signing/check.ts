/** The three-state outcome shared by the verifiers (`verifyPe`, `verifyMar`) and `marsign verify`. */

/**
 * The outcome of one check. `not checked` always carries the reason (e.g. "no --ca given"); `invalid`
 * carries what failed. A check that was asked for and cannot be made (an unsupported algorithm, a
 * signer certificate missing from the signature) is `invalid`, never `not checked`.
 */
export type CheckStatus = 'ok' | 'invalid' | 'not checked';

export interface Check {
  status: CheckStatus;
  reason?: string;
}

/** The worst of several statuses: invalid > not checked > ok (ok for none). */
export function worstStatus(statuses: Iterable<CheckStatus>): CheckStatus {
  let worst: CheckStatus = 'ok';
  for (const s of statuses) {
    if (s === 'invalid') return s;
    if (s === 'not checked') worst = s;
  }
  return worst;
}
