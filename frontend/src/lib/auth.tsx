import { useQueryClient } from '@tanstack/react-query';
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';
import { Navigate, useLocation } from 'react-router-dom';
import { authLogout } from '../client/sdk.gen';
import {
  clearSession,
  readSession,
  subscribeSession,
  type SessionEndReason,
  type StoredSession,
} from '../api/session';

interface AuthState {
  session: StoredSession | null;
  /** Why the last session ended, so the log-in page can say so. */
  endReason: SessionEndReason | null;
  logOut: () => void;
}

const AuthContext = createContext<AuthState | null>(null);

export interface LoginLocationState {
  from?: string;
  reason?: SessionEndReason;
}

/** Keeps the session in React state and sends the user to log in when it ends. */
export function AuthProvider({ children }: { children: ReactNode }) {
  const [session, setSession] = useState<StoredSession | null>(() => readSession());
  const [endReason, setEndReason] = useState<SessionEndReason | null>(null);
  const location = useLocation();
  const queryClient = useQueryClient();

  // The route guard does the redirect; this only keeps state and drops the old user's data.
  useEffect(
    () =>
      subscribeSession((next, reason) => {
        setSession(next);
        setEndReason(next === null ? (reason ?? 'logout') : null);
        if (next === null) queryClient.clear();
      }),
    [queryClient],
  );

  // End the session when the token expires, even if no request notices it first.
  useEffect(() => {
    if (!session?.expiresAt) return undefined;
    const delay = session.expiresAt - Date.now();
    if (delay <= 0) {
      clearSession('expired');
      return undefined;
    }
    const timer = window.setTimeout(() => clearSession('expired'), Math.min(delay, 2 ** 31 - 1));
    return () => window.clearTimeout(timer);
  }, [session]);

  // Pick up a log-out done in another part of the app (e.g. a 401 during navigation).
  useEffect(() => {
    const current = readSession();
    if ((current?.token ?? null) !== (session?.token ?? null)) setSession(current);
  }, [location.pathname, session]);

  // Revoke the account's tokens on the server too (log out everywhere); the session ends here
  // whatever the answer, so an unreachable server cannot keep anyone logged in.
  const logOut = useCallback(() => {
    void authLogout().catch(() => undefined).finally(() => clearSession('logout'));
  }, []);
  const value = useMemo(() => ({ session, endReason, logOut }), [session, endReason, logOut]);
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): AuthState {
  const value = useContext(AuthContext);
  if (!value) throw new Error('useAuth must be used inside AuthProvider');
  return value;
}

/** Route guard: pages inside need a session; others are sent to log in and brought back. */
export function RequireAuth({ children }: { children: ReactNode }) {
  const { session, endReason } = useAuth();
  const location = useLocation();
  if (!session) {
    const state: LoginLocationState = {};
    if (endReason) state.reason = endReason;
    // After a log-out the next log-in starts fresh; otherwise come back to where we were.
    if (endReason !== 'logout') state.from = `${location.pathname}${location.search}`;
    return <Navigate to="/login" replace state={state} />;
  }
  return <>{children}</>;
}
