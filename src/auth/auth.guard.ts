import { CanActivate, ExecutionContext, Injectable, UnauthorizedException } from '@nestjs/common';
import type { IncomingMessage } from 'node:http';
import { DjangoTokenVerifier } from './django-token.verifier';
import { AuthError, type Principal } from './principal';

/** `Sec-WebSocket-Protocol` entries carrying a token look like `bearer.<jwt>` (browsers cannot set headers). */
export const BEARER_PROTOCOL_PREFIX = 'bearer.';
/** The subprotocol the server selects when a client offers it next to its token. */
export const APP_PROTOCOL = 'ansflow.v1';

/**
 * The one auth guard: finds the token of a request (query `token`, `Authorization: Bearer`, or a
 * `bearer.<jwt>` subprotocol) and verifies it. The WebSocket upgrade router calls `authenticate`, which it must
 * do itself because Nest guards do not run on `handleConnection`; HTTP routes use it as a Nest guard.
 */
@Injectable()
export class AuthGuard implements CanActivate {
  constructor(private readonly verifier: DjangoTokenVerifier) {}

  /** The token a request carries, or undefined. */
  tokenOf(req: IncomingMessage): string | undefined {
    const url = req.url ?? '';
    const q = url.indexOf('?');
    if (q !== -1) {
      const token = new URLSearchParams(url.slice(q + 1)).get('token');
      if (token !== null && token !== '') return token;
    }
    const header = req.headers.authorization;
    if (typeof header === 'string' && /^bearer /i.test(header)) return header.slice(7).trim();
    const protocols = req.headers['sec-websocket-protocol'];
    if (typeof protocols === 'string') {
      for (const p of protocols.split(',')) {
        const v = p.trim();
        if (v.startsWith(BEARER_PROTOCOL_PREFIX)) return v.slice(BEARER_PROTOCOL_PREFIX.length);
      }
    }
    return undefined;
  }

  /** The principal of a request that carries a token; undefined when it carries none; throws `AuthError` on a bad one. */
  authenticate(req: IncomingMessage): Principal | undefined {
    const token = this.tokenOf(req);
    return token === undefined ? undefined : this.verifier.verify(token);
  }

  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<IncomingMessage & { principal?: Principal }>();
    try {
      const principal = this.authenticate(req);
      if (principal === undefined) throw new AuthError('token_required', 'no token');
      req.principal = principal;
      return true;
    } catch (err) {
      if (err instanceof AuthError) throw new UnauthorizedException({ statusCode: 401, error: err.reason, message: err.reason });
      throw err;
    }
  }
}
