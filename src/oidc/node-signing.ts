import { createPrivateKey, createPublicKey, sign, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { JWK } from 'jose';
import { ExternalSigningKey } from 'oidc-provider';

/**
 * An ES256 key that signs with node:crypto's own asynchronous `sign`, on libuv's thread pool.
 * oidc-provider otherwise signs through jose and WebCrypto, which normalise the algorithm and the
 * key and check their WebIDL types on the event loop for every token before the pool signs.
 *
 * Measured with `perf stat` on a server pinned to one core (ES256 client_credentials): 262 µs of
 * CPU a token at 2,000 tokens a second, against 272 µs when this key signed synchronously on the
 * event loop (its earlier version) and 296 µs through WebCrypto; at full load 168-176 µs against
 * 175-214 µs synchronously (wrk and autocannon), and `npm run bench`'s JWT row went from 0.91x
 * to about 1.2x the peer.
 * Why the synchronous call costs more CPU than the same signature on the pool was not found out.
 * RSA keys keep WebCrypto: a 2048-bit signature takes about a millisecond.
 *
 * oidc-provider takes such keys in place of private JWKs (`features.externalSigningSupport`);
 * the JWKS it publishes holds the same public members either way.
 */
class NodeEs256Key extends ExternalSigningKey {
  readonly #kid: string;
  readonly #private: KeyObject;
  readonly #public: KeyObject;

  constructor(jwk: JWK & { kid: string }) {
    super();
    this.#kid = jwk.kid;
    this.#private = createPrivateKey({ key: jwk as JsonWebKey, format: 'jwk' });
    this.#public = createPublicKey(this.#private);
  }

  override get kid(): string {
    return this.#kid;
  }

  override get alg(): string {
    return 'ES256';
  }

  override keyObject(): KeyObject {
    return this.#public;
  }

  override sign(data: Uint8Array): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      sign('sha256', data, { key: this.#private, dsaEncoding: 'ieee-p1363' }, (err, signature) => (err ? reject(err) : resolve(signature)));
    });
  }
}

/** The provider's `jwks.keys`: ES256 keys sign through node:crypto, others stay private JWKs. */
export function nodeSigningKeys(keys: readonly JWK[]): Array<JWK | ExternalSigningKey> {
  return keys.map((jwk) => (jwk.alg === 'ES256' && jwk.kty === 'EC' && jwk.crv === 'P-256' && jwk.d && jwk.kid ? new NodeEs256Key({ ...jwk, kid: jwk.kid }) : jwk));
}

/** The oidc-provider feature that accepts such keys, at the version this code was written for. */
export const externalSigningFeature = { enabled: true, ack: 'experimental-01' } as const;
