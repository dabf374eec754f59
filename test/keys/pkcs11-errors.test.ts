/**
 * Which Cryptoki return values are configuration errors (fail fast) and which are retried, as the
 * pkcs11js binding reports them (an Error whose `code` is the CK_RV and whose message is its name).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, TransientError, fromPlainError, isRetryable, toPlainError } from '../../src/errors.js';
import { classify } from '../../src/keys/pkcs11.js';

const rv = (name: string, code: number): Error => Object.assign(new Error(name), { code });
const URI = 'pkcs11:token=t;object=k';

test('CK_RV → typed error: PIN, mechanism, session, device; retryable only where a retry can help', () => {
  const cases: [string, number, string, boolean][] = [
    ['CKR_PIN_INCORRECT', 0xa0, 'PKCS11_PIN_WRONG', false],
    ['CKR_PIN_LEN_RANGE', 0xa2, 'PKCS11_PIN_WRONG', false],
    ['CKR_PIN_LOCKED', 0xa4, 'PKCS11_PIN_LOCKED', false],
    ['CKR_MECHANISM_INVALID', 0x70, 'PKCS11_MECHANISM_UNSUPPORTED', false],
    ['CKR_KEY_FUNCTION_NOT_PERMITTED', 0x68, 'PKCS11_MECHANISM_UNSUPPORTED', false],
    ['CKR_KEY_TYPE_INCONSISTENT', 0x63, 'PKCS11_MECHANISM_UNSUPPORTED', false],
    ['CKR_SESSION_HANDLE_INVALID', 0xb3, 'PKCS11_SESSION_LOST', true],
    ['CKR_SESSION_CLOSED', 0xb0, 'PKCS11_SESSION_LOST', true],
    ['CKR_USER_NOT_LOGGED_IN', 0x101, 'PKCS11_SESSION_LOST', true],
    ['CKR_TOKEN_NOT_PRESENT', 0xe0, 'PKCS11_SESSION_LOST', true],
    ['CKR_DEVICE_ERROR', 0x30, 'PKCS11_DEVICE_BUSY', true],
    ['CKR_DEVICE_MEMORY', 0x31, 'PKCS11_DEVICE_BUSY', true],
    ['CKR_SESSION_COUNT', 0xb1, 'PKCS11_DEVICE_BUSY', true],
    ['CKR_FUNCTION_FAILED', 0x6, 'PKCS11_DEVICE_BUSY', true],
    ['CKR_ARGUMENTS_BAD', 0x7, 'PKCS11_FAILED', false],
  ];
  for (const [name, code, want, retry] of cases) {
    const e = classify(rv(name, code), URI, 'C_Sign');
    assert.equal(e.code, want, name);
    assert.ok(retry ? e instanceof TransientError : e instanceof ConfigError, `${name}: ${e.name}`);
    assert.equal(isRetryable(e), retry, name);
    // Across a thread or queue boundary the decision survives.
    assert.equal(isRetryable(fromPlainError(toPlainError(e))), retry, `${name} after the boundary`);
    assert.ok(e.message.startsWith(`${URI}: C_Sign failed with ${name}`), e.message);
  }
  // Not a Cryptoki error (a bug, a TypeError from the binding): not retried.
  const bug = classify(new TypeError('Argument 0 has wrong type'), URI, 'C_Sign');
  assert.equal(bug.code, 'PKCS11_FAILED');
  assert.equal(isRetryable(bug), false);
});
