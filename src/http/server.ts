import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** An HTTP server for `handler`, listening; resolves with the bound port (useful with port 0). */
export async function startHttpServer(handler: http.RequestListener, port: number, host?: string): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer(handler);
  // Longer than common load balancers' idle timeouts, so they never reuse a socket we closed.
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return { server, port: (server.address() as AddressInfo).port };
}

/** Graceful: stop accepting, let requests in flight finish, drop idle keep-alive sockets (all after 5 s). */
export async function closeGracefully(server: http.Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const force = setTimeout(() => server.closeAllConnections(), 5000).unref();
  await closed;
  clearTimeout(force);
}
