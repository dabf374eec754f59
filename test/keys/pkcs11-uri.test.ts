import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { displayUri, isPkcs11Uri, parsePkcs11Uri } from '../../src/keys/pkcs11-uri.js';

const rejects = (uri: string, code: string, ...mustInclude: string[]) => {
  assert.throws(
    () => parsePkcs11Uri(uri),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.code, code, e.message);
      for (const s of mustInclude) assert.ok(e.message.includes(s), `"${e.message}" should include ${s}`);
      return true;
    },
    uri,
  );
};

test('RFC 7512 §3 examples parse into their attributes', () => {
  const a = parsePkcs11Uri(
    'pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=',
  );
  assert.equal(a.token, 'The Software PKCS#11 Softtoken');
  assert.equal(a.manufacturer, 'Snake Oil, Inc.');
  assert.equal(a.model, '1.0');
  assert.equal(a.object, 'my-certificate');
  assert.equal(a.type, 'cert');
  assert.equal(Buffer.from(a.id!).toString('hex'), '69953e5cf4bdec91');
  assert.equal(a.serial, '');

  const b = parsePkcs11Uri('pkcs11:object=my-sign-key;type=private?module-name=mypkcs11');
  assert.equal(b.object, 'my-sign-key');
  assert.equal(b.type, 'private');
  assert.equal(b.moduleName, 'mypkcs11');

  const c = parsePkcs11Uri(
    'pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token;library-version=1.23',
  );
  assert.equal(c.libraryManufacturer, 'Snake Oil, Inc.');
  assert.equal(c.libraryDescription, 'Soft Token');
  assert.deepEqual(c.libraryVersion, { major: 1, minor: 23 });

  const d = parsePkcs11Uri('pkcs11:slot-description=Sun%20Metaslot;slot-manufacturer=Acme;slot-id=7');
  assert.equal(d.slotDescription, 'Sun Metaslot');
  assert.equal(d.slotId, 7);

  // §3: "A token with a UTF-8 label", percent-encoded bytes of non-ASCII characters.
  assert.equal(
    parsePkcs11Uri('pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1').token,
    'Name with a small A with acute: á',
  );
  // The empty URI matches everything.
  assert.deepEqual(parsePkcs11Uri('pkcs11:').vendor, {});
  // Vendor attributes are kept, not interpreted; scheme and names are case-insensitive.
  const v = parsePkcs11Uri('PKCS11:TOKEN=t;x-vendor=abc?x-q=1');
  assert.equal(v.token, 't');
  assert.deepEqual(v.vendor, { 'x-vendor': 'abc', 'x-q': '1' });
  assert.ok(isPkcs11Uri('PKCS11:token=t') && !isPkcs11Uri('keys/pkcs11.pem'));
});

test('pin-source: a file name or file: URI; command sources and other schemes are refused', () => {
  assert.equal(parsePkcs11Uri('pkcs11:token=t?pin-source=file:/etc/token').pinSource, '/etc/token');
  assert.equal(parsePkcs11Uri('pkcs11:token=t?pin-source=file:///etc/token').pinSource, '/etc/token');
  assert.equal(parsePkcs11Uri('pkcs11:token=t?pin-source=pin.txt').pinSource, 'pin.txt');
  assert.equal(parsePkcs11Uri('pkcs11:token=t?pin-source=%2Fvar%2Fpin').pinSource, '/var/pin');
  rejects('pkcs11:token=t?pin-source=%7C/usr/bin/get-pin', 'PKCS11_URI_INVALID', '|command');
  rejects('pkcs11:token=t?pin-source=https://example.invalid/pin', 'PKCS11_URI_INVALID', 'file');
});

test('pin-value is refused and never echoed', () => {
  const secret = 'S3cret-PIN-in-URI';
  for (const uri of [`pkcs11:token=t?pin-value=${secret}`, `pkcs11:token=t?x-a=1&pin-value=${secret}`]) {
    rejects(uri, 'PKCS11_URI_PIN_INLINE', 'pin-value');
    try {
      parsePkcs11Uri(uri);
    } catch (e) {
      assert.ok(!(e as Error).message.includes(secret), (e as Error).message);
      assert.ok(!JSON.stringify((e as ConfigError).details).includes(secret));
    }
  }
  assert.equal(
    displayUri(`pkcs11:token=t;object=k?pin-value=${secret}&pin-source=f`),
    'pkcs11:token=t;object=k?pin-source=f',
  );
});

test('malformed URIs: unknown attributes, duplicates, bad encoding, bad values — each a typed error', () => {
  rejects('file:key.pem', 'PKCS11_URI_INVALID', 'pkcs11:');
  rejects('pkcs11:token=t;labl=k', 'PKCS11_URI_INVALID', 'unknown path attribute "labl"');
  rejects('pkcs11:token=t?pin=1234', 'PKCS11_URI_INVALID', 'unknown query attribute "pin"');
  rejects('pkcs11:token=a;token=b', 'PKCS11_URI_INVALID', 'more than once');
  rejects('pkcs11:token=a%2', 'PKCS11_URI_INVALID', 'percent');
  rejects('pkcs11:token=a%zz', 'PKCS11_URI_INVALID', 'percent');
  rejects('pkcs11:token=a b', 'PKCS11_URI_INVALID', 'percent');
  rejects('pkcs11:token=a/b', 'PKCS11_URI_INVALID', 'percent'); // "/" is reserved in the path
  rejects('pkcs11:token=%C3%28', 'PKCS11_URI_INVALID', 'UTF-8');
  rejects('pkcs11:token', 'PKCS11_URI_INVALID', 'name=');
  rejects('pkcs11:type=key', 'PKCS11_URI_INVALID', 'type must be');
  rejects('pkcs11:slot-id=x1', 'PKCS11_URI_INVALID', 'slot-id');
  rejects('pkcs11:library-version=a.b', 'PKCS11_URI_INVALID', 'library-version');
  rejects('pkcs11:token=t#frag', 'PKCS11_URI_INVALID', 'fragment');
  rejects(`pkcs11:token=${'a'.repeat(3000)}`, 'PKCS11_URI_INVALID', 'longer than');
});
