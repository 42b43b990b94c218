import { createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';

const keys = new Map<string, KeyObject>();

/** A Django simplejwt-shaped access token (HS256), valid for an hour. */
export function accessToken(secret: string, userId: number): string {
  const iat = Math.floor(Date.now() / 1000);
  return jwt.sign(
    { token_type: 'access', exp: iat + 3600, iat, jti: randomBytes(16).toString('hex'), user_id: userId },
    // A KeyObject, not the string: jsonwebtoken otherwise tries to parse the string as a PEM key each time.
    keys.get(secret) ?? keys.set(secret, createSecretKey(Buffer.from(secret, 'utf8'))).get(secret)!,
    { algorithm: 'HS256', noTimestamp: true },
  );
}
