import { generateKeyPairSync } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { loadConfig } from '../config/config';
import { DjangoTokenVerifier } from './django-token.verifier';
import { AuthError } from './principal';

const SECRET = 'unit-test-secret-key-0123456789';

function verifier(env: Record<string, string> = {}): DjangoTokenVerifier {
  return new DjangoTokenVerifier(loadConfig({ NODE_ENV: 'test', DJANGO_SECRET_KEY: SECRET, JWT_LEEWAY_SECONDS: '0', ...env }));
}

function sign(payload: Record<string, unknown>, key: string = SECRET, algorithm: jwt.Algorithm = 'HS256'): string {
  const iat = Math.floor(Date.now() / 1000);
  return jwt.sign({ token_type: 'access', iat, exp: iat + 300, jti: 'f'.repeat(32), user_id: 1, ...payload }, key, { algorithm, noTimestamp: true });
}

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof AuthError) return err.reason;
    throw err;
  }
  return 'accepted';
}

describe('DjangoTokenVerifier', () => {
  it('accepts a simplejwt access token with an integer or a string user_id', () => {
    expect(verifier().verify(sign({ user_id: 5 })).userId).toBe('5');
    expect(verifier().verify(sign({ user_id: '5' })).userId).toBe('5');
  });

  it('refuses a refresh token, a missing token_type, a missing or odd user_id', () => {
    expect(reasonOf(() => verifier().verify(sign({ token_type: 'refresh' })))).toBe('token_invalid');
    expect(reasonOf(() => verifier().verify(sign({ token_type: undefined })))).toBe('token_invalid');
    expect(reasonOf(() => verifier().verify(sign({ user_id: undefined })))).toBe('token_invalid');
    expect(reasonOf(() => verifier().verify(sign({ user_id: { id: 1 } })))).toBe('token_invalid');
  });

  it('tells expired from invalid, and honours the leeway', () => {
    const past = Math.floor(Date.now() / 1000) - 3;
    expect(reasonOf(() => verifier().verify(sign({ exp: past })))).toBe('token_expired');
    expect(reasonOf(() => verifier({ JWT_LEEWAY_SECONDS: '10' }).verify(sign({ exp: past })))).toBe('accepted');
  });

  it('refuses another key, alg none and an empty token', () => {
    expect(reasonOf(() => verifier().verify(sign({}, 'other-key-000000000000')))).toBe('token_invalid');
    const none = jwt.sign({ token_type: 'access', user_id: 1, exp: Math.floor(Date.now() / 1000) + 60 }, '', { algorithm: 'none' });
    expect(reasonOf(() => verifier().verify(none))).toBe('token_invalid');
    expect(reasonOf(() => verifier().verify(''))).toBe('token_required');
  });

  it('checks audience and issuer when configured', () => {
    const v = verifier({ JWT_AUDIENCE: 'ansflow', JWT_ISSUER: 'django' });
    expect(reasonOf(() => v.verify(sign({ aud: 'ansflow', iss: 'django' })))).toBe('accepted');
    expect(reasonOf(() => v.verify(sign({ aud: 'other', iss: 'django' })))).toBe('token_invalid');
    expect(reasonOf(() => v.verify(sign({ aud: 'ansflow' })))).toBe('token_invalid');
  });

  it('verifies RS256 with the public key and refuses an HS256 token forged with that public key', () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pub = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const v = verifier({ JWT_ALGORITHM: 'RS256', JWT_VERIFYING_KEY: pub });
    expect(v.verify(sign({ user_id: 3 }, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), 'RS256')).userId).toBe('3');
    expect(reasonOf(() => v.verify(sign({ user_id: 3 }, pub, 'HS256')))).toBe('token_invalid');
  });
});
