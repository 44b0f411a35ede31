import { createUserStore } from '../accounts/store.ts';
import { parse, parseDuration, print, required, UsageError, type Args } from '../cli/args.ts';
import { apiScopes, type Config } from '../config.ts';
import { migrate, openDatabase } from '../db/knex.ts';
import { CidrError, parseCidrs } from '../http/client-ip.ts';
import { createApiKeyService, ApiKeyRuleError, statusOf, type ApiKeyService } from './service.ts';
import { createApiKeyStore, type ApiKey } from './store.ts';

const FLAG_OF: Record<string, string> = { scopes: '--scope', expires_at: '--expires-in', expires_in: '--grace', ip_allowlist: '--allow-ip' };

const summary = (key: ApiKey) => ({
  id: key.id,
  name: key.name,
  environment: key.environment,
  type: key.restricted ? 'restricted' : 'secret',
  redacted_key: `${key.prefix}...${key.lastFour}`,
  scopes: key.scopes,
  ip_allowlist: key.ipAllowlist,
  status: statusOf(key, Date.now()),
  created_at: new Date(key.createdAt).toISOString(),
  expires_at: key.expiresAt === null ? null : new Date(key.expiresAt).toISOString(),
  last_used_at: key.lastUsedAt === null ? null : new Date(key.lastUsedAt).toISOString(),
  request_count: key.requestCount,
});

const line = (k: ReturnType<typeof summary>) =>
  `${k.id}  ${k.redacted_key}  ${k.name}  ${k.status}  scopes: ${k.scopes?.join(' ') ?? 'full access'}${k.expires_at ? `  expires ${k.expires_at}` : ''}`;

async function anyKey(service: ApiKeyService, args: Args): Promise<ApiKey> {
  const id = args.positionals[0];
  if (!id) throw new UsageError('name the key: latchkey keys <revoke|roll|events> KEY_ID');
  const key = await service.findAnyOwner(id);
  if (!key) throw new UsageError(`no API key with id ${id}`);
  return key;
}

/** `latchkey keys ...`: what the HTTP API does, for an operator with access to the database. */
export async function runKeysCommand(sub: string | undefined, argv: string[], config: Config): Promise<void> {
  const args = parse(argv, {
    user: { type: 'string' },
    name: { type: 'string' },
    env: { type: 'string' },
    restricted: { type: 'boolean' },
    scope: { type: 'string', multiple: true },
    'expires-in': { type: 'string' },
    'allow-ip': { type: 'string', multiple: true },
    grace: { type: 'string' },
  });
  const db = openDatabase(config.databaseUrl);
  try {
    await migrate(db);
    const service = createApiKeyService(createApiKeyStore(db.knex));
    const owner = async () => {
      const email = required(args, 'user');
      const user = await createUserStore(db.knex).findByEmail(email);
      if (!user) throw new UsageError(`no user with email ${email} (create one with: latchkey users create)`);
      return user;
    };

    switch (sub) {
      case 'create': {
        const env = (args.values.env as string | undefined) ?? 'test';
        if (env !== 'test' && env !== 'live') throw new UsageError('--env must be test or live');
        const scopes = (args.values.scope as string[] | undefined)?.flatMap((s) => s.split(/\s+/)).filter(Boolean);
        const unknown = scopes?.filter((s) => !apiScopes.includes(s)) ?? [];
        if (unknown.length) throw new UsageError(`--scope ${unknown.join(', ')}: unknown; known scopes: ${apiScopes.join(' ')}`);
        const expiresIn = args.values['expires-in'] as string | undefined;
        const created = await service.create({
          userId: (await owner()).id,
          name: required(args, 'name'),
          environment: env,
          restricted: args.values.restricted === true,
          scopes,
          ipAllowlist: args.values['allow-ip'] ? parseCidrs(args.values['allow-ip'] as string[]) : undefined,
          expiresAt: expiresIn === undefined ? undefined : Date.now() + parseDuration('expires-in', expiresIn) * 1000,
        });
        const shown = { ...summary(created.key), key: created.secret };
        print(args, shown, `${line(shown)}\nkey: ${created.secret}\n(the key is shown only once: store it now)`);
        return;
      }
      case 'list': {
        const keys = (await service.list((await owner()).id)).map(summary);
        print(args, keys, keys.map(line).join('\n') || 'no API keys');
        return;
      }
      case 'revoke': {
        const key = await anyKey(service, args);
        const revoked = await service.revoke(key.userId, key.id);
        print(args, summary(revoked ?? key), `revoked ${key.id} (${key.prefix}...${key.lastFour}); servers stop accepting it within VERIFICATION_CACHE_SECONDS`);
        return;
      }
      case 'roll': {
        const key = await anyKey(service, args);
        const grace = args.values.grace === undefined ? 0 : parseDuration('grace', args.values.grace as string);
        const rolled = await service.roll(key.userId, key.id, grace);
        if (!rolled) throw new UsageError(`API key ${key.id} is revoked; create a new key instead`);
        const shown = { ...summary(rolled.key), key: rolled.secret, previous_key_expires_at: rolled.previousExpiresAt && new Date(rolled.previousExpiresAt).toISOString() };
        print(args, shown, `${line(shown)}\nkey: ${rolled.secret}\nthe previous secret ${grace ? `works until ${shown.previous_key_expires_at}` : 'stopped working'}`);
        return;
      }
      case 'events': {
        const key = await anyKey(service, args);
        const events = (await service.events(key.id)).map((e) => ({ type: e.type, ip: e.ip, detail: e.detail, created_at: new Date(e.createdAt).toISOString() }));
        print(args, events, events.map((e) => `${e.created_at}  ${e.type}${e.ip ? `  ${e.ip}` : ''}${e.detail ? `  ${JSON.stringify(e.detail)}` : ''}`).join('\n') || 'no events');
        return;
      }
      default:
        throw new UsageError('usage: latchkey keys create|list|revoke|roll|events');
    }
  } catch (err) {
    if (err instanceof ApiKeyRuleError) throw new UsageError(`${FLAG_OF[err.field] ?? err.field}: ${err.message.slice(err.field.length + 2)}`);
    if (err instanceof CidrError) throw new UsageError(`--allow-ip: ${err.message}`);
    throw err;
  } finally {
    await db.close();
  }
}
