import { Inject, Injectable } from '@nestjs/common';
import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import jwt, { type Algorithm, type JwtPayload } from 'jsonwebtoken';
import { APP_CONFIG, type AppConfig } from '../config/config';
import { AuthError, type Principal } from './principal';

/**
 * Verifies djangorestframework-simplejwt access tokens. Transport-agnostic: the WebSocket upgrade, the `auth` frame
 * and HTTP routes all call `verify`, which returns a principal or throws a typed `AuthError`.
 */
@Injectable()
export class DjangoTokenVerifier {
  private readonly algorithms: Algorithm[];
  /**
   * The key as a KeyObject, built once. Given a string, jsonwebtoken first tries createPublicKey() on it for every
   * token (which fails, for an HMAC secret, after an OpenSSL parse and a thrown error) and then createSecretKey():
   * about 1.7 ms of CPU per verification, a quarter of the cost of opening a socket.
   */
  private readonly key: KeyObject;

  constructor(@Inject(APP_CONFIG) private readonly config: AppConfig) {
    // One algorithm only: accepting a list would allow HS/RS confusion with a public key used as an HMAC secret.
    this.algorithms = [config.JWT_ALGORITHM];
    this.key = config.JWT_ALGORITHM.startsWith('HS') ? createSecretKey(Buffer.from(config.jwtKey)) : publicKey(config.jwtKey);
  }

  verify(token: string): Principal {
    if (token.length === 0) throw new AuthError('token_required', 'empty token');
    if (token.length > 8192) throw new AuthError('token_invalid', 'token too long');
    let payload: string | JwtPayload;
    try {
      payload = jwt.verify(token, this.key, {
        algorithms: this.algorithms,
        audience: this.config.JWT_AUDIENCE,
        issuer: this.config.JWT_ISSUER,
        clockTolerance: this.config.JWT_LEEWAY_SECONDS,
      });
    } catch (err) {
      if (err instanceof jwt.TokenExpiredError) throw new AuthError('token_expired', 'token has expired');
      const detail = err instanceof Error ? err.message : 'unverifiable';
      throw new AuthError('token_invalid', detail);
    }
    if (typeof payload === 'string') throw new AuthError('token_invalid', 'payload is not a JSON object');
    // A refresh token verifies with the same key: only access tokens may open a socket.
    if (payload.token_type !== 'access') throw new AuthError('token_invalid', `token_type is ${String(payload.token_type)}, not access`);
    if (typeof payload.exp !== 'number') throw new AuthError('token_invalid', 'no exp claim');
    const raw: unknown = payload.user_id;
    let userId: string;
    if (typeof raw === 'number' && Number.isSafeInteger(raw)) userId = String(raw);
    else if (typeof raw === 'string' && raw.length > 0 && raw.length <= 64) userId = raw;
    else throw new AuthError('token_invalid', 'user_id missing or not an integer/string');
    return { userId, expiresAtMs: payload.exp * 1000 + this.config.JWT_LEEWAY_SECONDS * 1000, token };
  }
}

function publicKey(pem: string): KeyObject {
  try {
    return createPublicKey(pem);
  } catch (err) {
    // At start-up, naming the variable, rather than refusing every token later.
    throw new Error(`JWT_VERIFYING_KEY: not a usable public key (${err instanceof Error ? err.message : String(err)})`);
  }
}
