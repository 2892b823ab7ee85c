/**
 * The access token lives in sessionStorage: it survives a reload but not the closing of the tab,
 * and is never shared with other tabs or written to disk cookies.
 */
const TOKEN_KEY = 'spondyscan.token';
const EXPIRES_KEY = 'spondyscan.tokenExpiresAt';

export interface StoredSession {
  token: string;
  expiresAt: number | null;
}

type Listener = (session: StoredSession | null, reason: SessionEndReason | null) => void;
export type SessionEndReason = 'logout' | 'expired';

const listeners = new Set<Listener>();

export function readSession(): StoredSession | null {
  try {
    const token = window.sessionStorage.getItem(TOKEN_KEY);
    if (!token) return null;
    const raw = window.sessionStorage.getItem(EXPIRES_KEY);
    const expiresAt = raw ? Number(raw) : null;
    if (expiresAt !== null && Number.isFinite(expiresAt) && expiresAt <= Date.now()) {
      clearSession('expired');
      return null;
    }
    return { token, expiresAt: Number.isFinite(expiresAt) ? expiresAt : null };
  } catch {
    return null;
  }
}

export function getToken(): string | null {
  return readSession()?.token ?? null;
}

export function saveSession(token: string, expiresAt: string | number | null | undefined): void {
  window.sessionStorage.setItem(TOKEN_KEY, token);
  const when = typeof expiresAt === 'string' ? Date.parse(expiresAt) : expiresAt;
  if (when && Number.isFinite(when)) {
    window.sessionStorage.setItem(EXPIRES_KEY, String(when));
  } else {
    window.sessionStorage.removeItem(EXPIRES_KEY);
  }
  const session = readSession();
  listeners.forEach((listener) => listener(session, null));
}

export function clearSession(reason: SessionEndReason = 'logout'): void {
  const had = window.sessionStorage.getItem(TOKEN_KEY) !== null;
  window.sessionStorage.removeItem(TOKEN_KEY);
  window.sessionStorage.removeItem(EXPIRES_KEY);
  if (had) listeners.forEach((listener) => listener(null, reason));
}

export function subscribeSession(listener: Listener): () => void {
  listeners.add(listener);
  return () => {
    listeners.delete(listener);
  };
}
