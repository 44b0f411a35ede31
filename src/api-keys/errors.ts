import { ApiError } from '../errors.ts';

/** The answers for a bad API key, the same whether a key is checked locally or by introspection. */
export const invalidApiKey = (why: string) => new ApiError('invalid_api_key', `The API key provided is invalid: ${why}.`);
/** The same answer for every mistyped key, so refusing one allocates nothing. */
export const MISTYPED_API_KEY = invalidApiKey('it is malformed or mistyped (its checksum does not match); copy the whole key again');
export const outsideAllowlist = (ip: string) =>
  new ApiError('forbidden', `This API key may not be used from ${ip}: the address is not in the key's IP allowlist.`);
