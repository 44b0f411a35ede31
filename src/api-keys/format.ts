import { hash, randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';

export type Environment = 'test' | 'live';
export type KeyKind = 'sk' | 'rk';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
// 32 base62 characters carry 190 bits of randomness (the issue asks for at least 160).
const RANDOM_LENGTH = 32;
const CHECKSUM_LENGTH = 6; // 62^6 > 2^32: room for any CRC-32
const KEY_SHAPE = /^(sk|rk)_(test|live)_([0-9A-Za-z]{32})([0-9A-Za-z]{6})$/;
/** Anything that starts like one of our keys is claimed by the key verifier, even if mistyped. */
export const KEY_PREFIX_SHAPE = /^(sk|rk)_(test|live)_/;

function toBase62(value: number, length: number): string {
  let out = '';
  for (let n = value; out.length < length; n = Math.floor(n / 62)) out = BASE62[n % 62] + out;
  return out;
}

function randomBase62(length: number): string {
  // Rejection sampling: bytes >= 248 would bias the first characters of the alphabet.
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += BASE62[byte % 62];
    }
  }
  return out;
}

const checksumOf = (body: string) => toBase62(crc32(body), CHECKSUM_LENGTH);

export interface ParsedKey {
  kind: KeyKind;
  environment: Environment;
  /** `sk_test_`, `rk_live_`, ...: what listings show beside the last four characters. */
  prefix: string;
}

/**
 * A new secret: prefix, 32 random base62 characters, then a 6-character CRC-32 of everything
 * before it, so scanners and the server can tell a mistyped key without a database (GitHub's format).
 */
export function generateApiKey(kind: KeyKind, environment: Environment): { secret: string; prefix: string; lastFour: string } {
  const prefix = `${kind}_${environment}_`;
  const body = `${prefix}${randomBase62(RANDOM_LENGTH)}`;
  const secret = `${body}${checksumOf(body)}`;
  return { secret, prefix, lastFour: secret.slice(-4) };
}

/** The key's kind and environment when it is well-formed and its checksum matches; undefined otherwise. */
export function parseApiKey(secret: string): ParsedKey | undefined {
  const match = KEY_SHAPE.exec(secret);
  if (!match) return undefined;
  const [, kind, environment, , checksum] = match;
  if (checksumOf(secret.slice(0, -CHECKSUM_LENGTH)) !== checksum) return undefined;
  return { kind: kind as KeyKind, environment: environment as Environment, prefix: `${kind}_${environment}_` };
}

/**
 * What the database keeps instead of the secret. The secret is 190 random bits, so a plain
 * SHA-256 cannot be reversed or guessed; a slow KDF would only slow every request down.
 */
export const hashApiKey = (secret: string): string => hash('sha256', secret, 'base64url');
