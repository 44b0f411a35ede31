import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import type { ServerFixtures } from '../protocol.ts';

/** H, the ceiling: the least a Koa app can do per request on this machine. */
export async function start(): Promise<{ fixtures: ServerFixtures; close(): Promise<void> }> {
  const app = new Koa();
  app.use((ctx) => {
    ctx.body = 'Hello World';
  });
  const server = http.createServer(app.callback());
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    fixtures: { url: `http://127.0.0.1:${port}` },
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
