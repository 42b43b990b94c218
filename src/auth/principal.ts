/** Who is on the other end of a socket or request, as Django's token says. */
export interface Principal {
  /** Django's user id, normalised to a string (simplejwt sends an int up to 5.5.0, a string from 5.5.1). */
  userId: string;
  /** Token expiry, epoch milliseconds. */
  expiresAtMs: number;
  /** The raw token, kept in memory only to call Django on the user's behalf (AUTHZ_MODE=django); never logged. */
  token: string;
}

/** Why a token was refused: also the close reason of code 4001 and the `reason` label of the auth metric. */
export type AuthFailureReason = 'token_required' | 'token_invalid' | 'token_expired' | 'token_user_mismatch';

/** A refused token. `reason` is what the client sees; `detail` is for logs (never contains the token). */
export class AuthError extends Error {
  constructor(
    public readonly reason: AuthFailureReason,
    public readonly detail: string,
  ) {
    super(`${reason}: ${detail}`);
    this.name = 'AuthError';
  }
}
