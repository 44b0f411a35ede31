import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Servers boot for real (migrations, key generation, scrypt); give them room on a busy machine.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Separate processes: each test file boots its own servers and databases.
    pool: 'forks',
  },
});
