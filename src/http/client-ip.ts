import type { IncomingMessage } from 'node:http';
import ipaddr from 'ipaddr.js';
import proxyaddr from 'proxy-addr';

const PLAIN_IPV4 = /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;

/** `::ffff:203.0.113.7` and `203.0.113.7` are one client; allowlists and logs see the IPv4 form. */
export const normaliseIp = (ip: string): string => {
  // The common case, an IPv4 peer as the socket reports it, is already canonical.
  if (PLAIN_IPV4.test(ip)) return ip;
  if (ip.startsWith('::ffff:') && PLAIN_IPV4.test(ip.slice(7))) return ip.slice(7);
  return ipaddr.isValid(ip) ? ipaddr.process(ip).toString() : ip;
};

/**
 * The caller's address. X-Forwarded-For is believed only hop by hop from proxies listed in
 * `trustedProxies` (addresses, CIDRs, or `loopback`, `linklocal`, `uniquelocal`): anyone else
 * could write any address there.
 */
export function createClientIp(trustedProxies: readonly string[]): (req: IncomingMessage) => string {
  if (trustedProxies.length === 0) {
    // Nobody's X-Forwarded-For counts: the address is the connection's, the same for every
    // request a keep-alive connection carries.
    const bySocket = new WeakMap<object, string>();
    return (req) => {
      let ip = bySocket.get(req.socket);
      if (ip === undefined) bySocket.set(req.socket, (ip = normaliseIp(req.socket.remoteAddress ?? '')));
      return ip;
    };
  }
  const trust = proxyaddr.compile([...trustedProxies]);
  return (req) => {
    const peer = req.socket.remoteAddress ?? '';
    const ip = proxyaddr(req, trust);
    // A trusted proxy passing on junk does not make the junk an address.
    return normaliseIp(ip === peer || ipaddr.isValid(ip) ? ip : peer);
  };
}

export class CidrError extends Error {}

// IPv4 in the four-part decimal form only: "0x7f.1" or "010.0.0.1" are legal to inet_aton but
// nobody writing an allowlist means them.
const IPV4_SPELLING = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}(\/\d{1,2})?$/;

/** Canonical CIDRs ("203.0.113.0/24", "2001:db8::/32"); a bare address becomes a /32 or /128. */
export function parseCidrs(entries: readonly string[]): string[] {
  return entries.map((entry) => {
    try {
      if (!entry.includes(':') && !IPV4_SPELLING.test(entry)) throw new Error('not four-part decimal');
      const [address, bits] = entry.includes('/') ? ipaddr.parseCIDR(entry) : [ipaddr.parse(entry), undefined];
      const range = ipaddr.process(address.toString());
      const prefix = bits ?? (range.kind() === 'ipv4' ? 32 : 128);
      // 203.0.113.7/24 names the network 203.0.113.0/24; store it that way.
      const network = range.kind() === 'ipv4'
        ? ipaddr.IPv4.networkAddressFromCIDR(`${range.toString()}/${prefix}`)
        : ipaddr.IPv6.networkAddressFromCIDR(`${range.toString()}/${prefix}`);
      return `${network.toString()}/${prefix}`;
    } catch {
      throw new CidrError(`"${entry}" is not an IP address or CIDR range (like 203.0.113.0/24 or 2001:db8::/32)`);
    }
  });
}

/** A matcher for canonical CIDRs from `parseCidrs`. */
export function cidrMatcher(cidrs: readonly string[]): (ip: string) => boolean {
  const ranges = cidrs.map((c) => ipaddr.parseCIDR(c));
  return (ip) => {
    if (!ipaddr.isValid(ip)) return false;
    const address = ipaddr.process(ip);
    return ranges.some(([network, bits]) => network.kind() === address.kind() && address.match(network, bits));
  };
}

/** Whether every address of `inner` (a canonical CIDR) lies in one of `outer`'s ranges. */
export function cidrWithin(inner: string, outer: readonly string[]): boolean {
  const [network, bits] = ipaddr.parseCIDR(inner);
  return outer.some((range) => {
    const [outerNetwork, outerBits] = ipaddr.parseCIDR(range);
    return network.kind() === outerNetwork.kind() && bits >= outerBits && network.match(outerNetwork, outerBits);
  });
}
