import type { AuthServer } from './app.ts';
import { runKeysCommand } from './api-keys/cli.ts';
import { parse, print, required, UsageError } from './cli/args.ts';
import { DuplicateEmailError } from './accounts/store.ts';
import { ClientValidationError } from './clients/errors.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';
import { migrate, openDatabase } from './db/knex.ts';
import { tuneGarbageCollectorForServing } from './http/gc-tuning.ts';
import { createKeyStore } from './oidc/keys.ts';
import { runApi, startApiBeside } from './resource-server/cli.ts';

const usage = `Usage: latchkey <command> [options]

Commands:
  serve                                 start the authorization server and the companion API (what npm start runs)
  api                                   start the companion API alone (API_PORT, AUTH_SERVER_URL)
  migrate                               create or update the database schema
  users create --email E --password P [--name N]
  clients create --name N --redirect-uri U [--redirect-uri U2 ...] --scope "openid read"
                 [--public] [--grant-type T ...] [--resource-server]
  clients list
  clients delete CLIENT_ID
  signing-keys rotate [--alg ES256|RS256]
  signing-keys list
  keys create --user EMAIL --name N [--env test|live] [--restricted] [--scope S ...]
              [--expires-in 90d] [--allow-ip CIDR ...]
  keys list --user EMAIL
  keys revoke KEY_ID
  keys roll KEY_ID [--grace 1h]
  keys events KEY_ID

Every command takes --json to print JSON. Environment: PORT, ISSUER, DATABASE_URL (see README).`;

// The authorization server (oidc-provider, views ...) is loaded only by the commands that use it:
// `latchkey api`, `keys` and `migrate` run without it (see bin/load-ts.mjs).
const authServer = () => import('./app.ts');

/** Opens the server's storage without listening, runs fn, and closes it again. */
async function withServer<T>(config: Config, fn: (server: AuthServer) => Promise<T>): Promise<T> {
  const server = await (await authServer()).createAuthServer(config, { logger: undefined });
  try {
    return await fn(server);
  } finally {
    await server.close();
  }
}

async function serve(config: Config): Promise<void> {
  const server = await (await authServer()).createAuthServer(config);
  const port = await server.listen(config.port);
  server.logger.info('authorization server listening', { url: config.issuer, port });
  await startApiBeside(config, server);
  const stop = async () => {
    await server.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

async function run(argv: string[]): Promise<void> {
  const [command, sub, ...rest] = argv;
  const config = loadConfig();
  const quiet = { ...config, logLevel: 'warn' as const };

  switch (command) {
    case 'serve':
      tuneGarbageCollectorForServing();
      return serve(config);

    case 'api':
      tuneGarbageCollectorForServing();
      return runApi(config);

    case 'migrate': {
      const args = parse([sub ?? '', ...rest].filter(Boolean), {});
      const db = openDatabase(config.databaseUrl);
      try {
        const applied = await migrate(db);
        print(args, { applied }, applied.length ? `applied: ${applied.join(', ')}` : 'the schema is up to date');
      } finally {
        await db.close();
      }
      return;
    }

    case 'users': {
      if (sub !== 'create') throw new UsageError('usage: latchkey users create --email E --password P [--name N]');
      const args = parse(rest, { email: { type: 'string' }, password: { type: 'string' }, name: { type: 'string' } });
      const email = required(args, 'email');
      const password = required(args, 'password');
      if (!/^[^\s@]+@[^\s@]+$/.test(email)) throw new UsageError(`--email ${email} is not an email address`);
      if (password.length < 8) throw new UsageError('--password must be at least 8 characters');
      const user = await withServer(quiet, (s) => s.users.create({ email, password, name: args.values.name as string | undefined }));
      print(args, { id: user.id, email: user.email, name: user.name }, `created user ${user.email} (${user.id})`);
      return;
    }

    case 'clients': {
      const args = parse(rest, {
        name: { type: 'string' },
        'redirect-uri': { type: 'string', multiple: true },
        scope: { type: 'string' },
        public: { type: 'boolean' },
        'grant-type': { type: 'string', multiple: true },
        'resource-server': { type: 'boolean' },
      });
      const { createClientService } = await import('./clients/service.ts');
      await withServer(quiet, async (server) => {
        const clients = createClientService(server.provider, server.db.knex);
        if (sub === 'create') {
          const created = await clients.create({
            name: required(args, 'name'),
            redirectUris: (args.values['redirect-uri'] as string[] | undefined) ?? [],
            scope: (args.values.scope as string | undefined) ?? 'openid offline_access read write',
            public: args.values.public === true,
            grantTypes: args.values['grant-type'] as string[] | undefined,
            resourceServer: args.values['resource-server'] === true,
          });
          print(args, created, `client_id: ${created.client_id}${created.client_secret ? `\nclient_secret: ${created.client_secret}\n(the secret is shown only once)` : ''}`);
        } else if (sub === 'list') {
          const list = await clients.list();
          print(args, list, list.map((c) => `${c.client_id}  ${c.client_name}  [${c.grant_types.join(', ')}]  ${c.scope}`).join('\n') || 'no clients');
        } else if (sub === 'delete') {
          const id = args.positionals[0];
          if (!id) throw new UsageError('usage: latchkey clients delete CLIENT_ID');
          if (!(await clients.delete(id))) throw new UsageError(`no client with id ${id}`);
          print(args, { deleted: id }, `deleted client ${id}`);
        } else {
          throw new UsageError('usage: latchkey clients create|list|delete');
        }
      });
      return;
    }

    case 'signing-keys': {
      const args = parse(rest, { alg: { type: 'string' } });
      const db = openDatabase(config.databaseUrl);
      try {
        await migrate(db);
        const keys = createKeyStore(db.knex);
        if (sub === 'rotate') {
          const alg = (args.values.alg as string | undefined) ?? 'ES256';
          if (alg !== 'ES256' && alg !== 'RS256') throw new UsageError('--alg must be ES256 or RS256');
          const result = await keys.rotate(alg);
          print(args, result, `new ${alg} signing key ${result.kid}. Running servers sign with it from their next start; then ${result.replaces.join(', ') || 'no key'} retires, and stays published until the tokens it signed have expired.`);
        } else if (sub === 'list') {
          const list = await keys.list();
          print(args, list, list.map((k) => `${k.kid}  ${k.alg}  created ${k.createdAt}${k.retiredAt ? `  retired ${k.retiredAt}` : '  active'}`).join('\n'));
        } else {
          throw new UsageError('usage: latchkey signing-keys rotate|list');
        }
      } finally {
        await db.close();
      }
      return;
    }

    case 'keys':
      return runKeysCommand(sub, rest, quiet);

    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${usage}\n`);
      return;

    default:
      throw new UsageError(`unknown command "${command}"\n\n${usage}`);
  }
}

try {
  await run(process.argv.slice(2));
} catch (err) {
  const expected = err instanceof UsageError || err instanceof ConfigError || err instanceof ClientValidationError || err instanceof DuplicateEmailError;
  process.stderr.write(`latchkey: ${expected ? (err as Error).message : (err as Error).stack}\n`);
  process.exitCode = expected ? 2 : 1;
}
