import { createHmac, timingSafeEqual } from 'node:crypto';
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { UserStore } from '../accounts/store.ts';
import { scopeDescriptions } from '../config.ts';
import { BodyError, parseForm, readRawBody } from '../http/body.ts';
import { renderPage } from '../http/views.ts';
import type { Logger } from '../logger.ts';

interface ConsentDetails {
  missingOIDCScope?: string[];
  missingOIDCClaims?: string[];
  missingResourceScopes?: Record<string, string[]>;
}

/**
 * The login and consent pages a person completes in the browser. oidc-provider drives the flow;
 * these routes only show a page, check what was submitted and report the result back to it.
 */
export function createInteractionRoutes(provider: Provider, users: UserStore, csrfKey: string, logger: Logger): Router {
  const router = new Router({ prefix: '/interaction' });

  // The token binds a form to its interaction and to our key: a page on another site cannot forge it.
  const csrfFor = (uid: string) => createHmac('sha256', csrfKey).update(`interaction:${uid}`).digest('base64url');

  async function readForm(ctx: Context, uid: string): Promise<Record<string, string> | undefined> {
    if (!ctx.is('application/x-www-form-urlencoded')) {
      await renderPage(ctx, 'error', { error: 'invalid_request', description: 'the form was not submitted as a form' }, 400);
      return undefined;
    }
    let form: Record<string, string>;
    try {
      form = parseForm(await readRawBody(ctx));
    } catch (err) {
      if (!(err instanceof BodyError)) throw err;
      await renderPage(ctx, 'error', { error: 'invalid_request', description: err.message }, err.status);
      return undefined;
    }
    const expected = Buffer.from(csrfFor(uid));
    const actual = Buffer.from(form.csrf ?? '');
    if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) {
      await renderPage(ctx, 'error', { error: 'invalid_request', description: 'the form expired or did not come from this page; go back to the app and start again' }, 403);
      return undefined;
    }
    return form;
  }

  async function clientNameOf(clientId: string): Promise<string> {
    const client = await provider.Client.find(clientId);
    return client?.clientName ?? clientId;
  }

  function requestedScopes(details: ConsentDetails, params: Record<string, unknown>) {
    const names = new Set<string>([
      ...(details.missingOIDCScope ?? []),
      ...Object.values(details.missingResourceScopes ?? {}).flat(),
    ]);
    // Show everything asked for, in the order the app asked, even scopes granted before.
    const ordered = String(params.scope ?? '').split(' ').filter((s) => names.has(s) || s in scopeDescriptions);
    for (const name of names) if (!ordered.includes(name)) ordered.push(name);
    return ordered
      .filter((name) => name in scopeDescriptions)
      .map((name) => ({ name, description: scopeDescriptions[name] }));
  }

  router.get('/:uid', async (ctx) => {
    const { uid, prompt, params, session } = await provider.interactionDetails(ctx.req, ctx.res);
    ctx.set('Cache-Control', 'no-store');
    const clientName = await clientNameOf(String(params.client_id));
    const csrf = csrfFor(uid);
    if (prompt.name === 'login') {
      return renderPage(ctx, 'login', { uid, csrf, clientName, email: '', error: null });
    }
    const user = session?.accountId ? await users.findById(session.accountId) : undefined;
    return renderPage(ctx, 'consent', {
      uid,
      csrf,
      clientName,
      email: user?.email ?? 'unknown user',
      scopes: requestedScopes(prompt.details as ConsentDetails, params),
    });
  });

  router.post('/:uid/login', async (ctx) => {
    const { uid, prompt, params } = await provider.interactionDetails(ctx.req, ctx.res);
    const form = await readForm(ctx, uid);
    if (!form) return;
    if (prompt.name !== 'login') {
      return renderPage(ctx, 'error', { error: 'invalid_request', description: 'this sign-in step is already complete' }, 400);
    }
    const email = form.email?.trim() ?? '';
    const user = email && form.password ? await users.authenticate(email, form.password) : undefined;
    if (!user) {
      logger.info('login failed', { interaction: uid });
      return renderPage(ctx, 'login', {
        uid,
        csrf: csrfFor(uid),
        clientName: await clientNameOf(String(params.client_id)),
        email,
        error: 'The email or password is incorrect.',
      }, 401);
    }
    logger.info('login succeeded', { interaction: uid, user_id: user.id });
    await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: user.id } }, { mergeWithLastSubmission: false });
  });

  router.post('/:uid/confirm', async (ctx) => {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const form = await readForm(ctx, details.uid);
    if (!form) return;
    const { prompt, params, session, grantId } = details;
    if (prompt.name !== 'consent' || !session?.accountId) {
      return renderPage(ctx, 'error', { error: 'invalid_request', description: 'there is no consent to give for this request' }, 400);
    }
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: String(params.client_id) });
    if (!grant) {
      return renderPage(ctx, 'error', { error: 'invalid_request', description: 'the earlier authorization was revoked; start again from the app' }, 400);
    }
    const consent = prompt.details as ConsentDetails;
    if (consent.missingOIDCScope?.length) grant.addOIDCScope(consent.missingOIDCScope.join(' '));
    if (consent.missingOIDCClaims?.length) grant.addOIDCClaims(consent.missingOIDCClaims);
    for (const [resource, scopes] of Object.entries(consent.missingResourceScopes ?? {})) {
      grant.addResourceScope(resource, scopes.join(' '));
    }
    const savedGrantId = await grant.save();
    logger.info('consent given', { interaction: details.uid, user_id: session.accountId, client_id: params.client_id });
    await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId: savedGrantId } }, { mergeWithLastSubmission: true });
  });

  router.post('/:uid/abort', async (ctx) => {
    const { uid, params } = await provider.interactionDetails(ctx.req, ctx.res);
    const form = await readForm(ctx, uid);
    if (!form) return;
    logger.info('authorization denied by the user', { interaction: uid, client_id: params.client_id });
    await provider.interactionFinished(
      ctx.req,
      ctx.res,
      { error: 'access_denied', error_description: 'The user denied the authorization request' },
      { mergeWithLastSubmission: false },
    );
  });

  return router;
}
