import { randomBytes } from 'node:crypto';
import jwt from 'jsonwebtoken';

export const TEST_SECRET = 'test-django-secret-key-0123456789';

/** A token shaped like djangorestframework-simplejwt's (HS256, token_type, jti, user_id, iat, exp). */
export function mintToken(
  opts: { userId?: number | string; type?: string | null; expiresIn?: number; secret?: string; extra?: Record<string, unknown> } = {},
): string {
  const iat = Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = { exp: iat + (opts.expiresIn ?? 3600), iat, jti: randomBytes(16).toString('hex'), user_id: opts.userId ?? 1, ...opts.extra };
  if (opts.type !== null) payload.token_type = opts.type ?? 'access';
  return jwt.sign(payload, opts.secret ?? TEST_SECRET, { algorithm: 'HS256', noTimestamp: true });
}

/** `alg: none`: a header and payload with an empty signature. */
export function unsignedToken(userId = 1): string {
  const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  const iat = Math.floor(Date.now() / 1000);
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ token_type: 'access', exp: iat + 3600, iat, jti: 'x'.repeat(32), user_id: userId })}.`;
}

/** The same token with its payload changed and the signature kept. */
export function tamperedToken(token: string, change: Record<string, unknown>): string {
  const [h, p, s] = token.split('.');
  const payload = { ...(JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>), ...change };
  return `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`;
}
