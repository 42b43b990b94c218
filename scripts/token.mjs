#!/usr/bin/env node
/**
 * Mints an access token the way djangorestframework-simplejwt does (for local use: in production Django issues
 * them), and prints it, then a ready ws:// URL with it:
 *
 *   npm run -s token -- --user 1 [--ttl 3600] [--endpoint execution/1]
 *
 * Signed with DJANGO_SECRET_KEY (HS256, or JWT_ALGORITHM's HS384/HS512), with simplejwt's claims: token_type
 * "access", exp, iat, jti (a uuid4 as 32 hex digits), user_id; aud/iss when JWT_AUDIENCE/JWT_ISSUER are set, as the
 * service then requires them. The URL's port is PORT (default 8001). Plain Node (no build step) so it answers at once.
 */
import { randomUUID } from 'node:crypto';
import jwt from 'jsonwebtoken';

const USAGE = 'usage: npm run -s token -- --user ID [--ttl SECONDS] [--endpoint execution/1]';

function fail(message) {
  process.stderr.write(`token: ${message}\n${USAGE}\n`);
  process.exit(2);
}

const args = { user: undefined, ttl: '3600', endpoint: 'execution/1' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const name = argv[i].replace(/^--/, '');
  if (name === 'help' || name === 'h') {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  if (!(name in args) || !argv[i].startsWith('--') || argv[i + 1] === undefined) fail(`unknown or incomplete option ${argv[i]}`);
  args[name] = argv[++i];
}
if (args.user === undefined || !/^[^\s]{1,64}$/.test(args.user)) fail('--user is required (the Django user id)');
if (!/^[1-9]\d{0,7}$/.test(args.ttl)) fail('--ttl must be a whole number of seconds');
if (!/^(execution|pipeline|project)\/[1-9]\d*$|^(monitor|system)$/.test(args.endpoint)) {
  fail('--endpoint must be execution/ID, pipeline/ID, project/ID, monitor or system');
}

const key = process.env.DJANGO_SECRET_KEY;
if (key === undefined || key.trim() === '') {
  fail('DJANGO_SECRET_KEY is not set: set it to the key the service verifies with (README, Quick start)');
}
const algorithm = process.env.JWT_ALGORITHM || 'HS256';
if (!/^HS(256|384|512)$/.test(algorithm)) fail(`JWT_ALGORITHM=${algorithm}: tokens signed with a private key come from Django, not from here`);

const iat = Math.floor(Date.now() / 1000);
// simplejwt's user_id is the user's primary key: an integer for Django's default user model.
const userId = /^\d{1,15}$/.test(args.user) ? Number(args.user) : args.user;
const claims = { token_type: 'access', exp: iat + Number(args.ttl), iat, jti: randomUUID().replace(/-/g, ''), user_id: userId };
if (process.env.JWT_AUDIENCE) claims.aud = process.env.JWT_AUDIENCE;
if (process.env.JWT_ISSUER) claims.iss = process.env.JWT_ISSUER;
// iat is already in the claims (jsonwebtoken keeps it; its noTimestamp option would drop it).
const token = jwt.sign(claims, key, { algorithm });

const port = process.env.PORT || '8001';
process.stderr.write(`access token for user ${args.user}, valid ${args.ttl} s (until ${new Date((iat + Number(args.ttl)) * 1000).toISOString()}), ${algorithm} with DJANGO_SECRET_KEY\n`);
process.stdout.write(`${token}\nws://127.0.0.1:${port}/ws/${args.endpoint}?token=${token}\n`);
