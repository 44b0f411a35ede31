/**
 * Freezes `value` and everything it holds. For objects handed to oidc-provider again and again:
 * nothing the library does with one can change what the next request sees (an attempt would
 * throw, in strict mode, instead of going unnoticed).
 */
export function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const member of Object.values(value)) deepFreeze(member);
  }
  return value;
}
