import { describe, expect, it } from 'vitest';
import { hashPassword, verifyPassword } from '../src/accounts/passwords.ts';

describe('password hashes', () => {
  it('carry their scrypt parameters, so a hash made with others still verifies', async () => {
    const accountHash = await hashPassword('correct horse');
    expect(accountHash).toMatch(/^scrypt\$32768\$8\$1\$/);
    const cheap = await hashPassword('correct horse', { N: 2 ** 10, r: 8, p: 1 });
    expect(cheap).toMatch(/^scrypt\$1024\$8\$1\$/);
    for (const stored of [accountHash, cheap]) {
      expect(await verifyPassword('correct horse', stored)).toBe(true);
      expect(await verifyPassword('correct horsf', stored)).toBe(false);
    }
  });
});
