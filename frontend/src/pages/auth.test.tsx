import { screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { configureClient } from '../api/client';
import { getToken, saveSession } from '../api/session';
import { AppRoutes } from '../routes';
import { renderWithProviders } from '../test/render';

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

function mockFetch(handler: (url: string, request: Request) => Response) {
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = input instanceof Request ? input : new Request(input, init);
    return handler(new URL(request.url).pathname, request);
  });
  vi.stubGlobal('fetch', fetchMock);
  return fetchMock;
}

beforeAll(() => configureClient('http://api.test'));
afterEach(() => vi.unstubAllGlobals());

describe('log in', () => {
  it('shows the server sentence for a wrong password and keeps no token', async () => {
    mockFetch(() => json(401, { code: 'invalid_credentials', message: 'Incorrect email or password.' }));
    const user = userEvent.setup();
    renderWithProviders(<AppRoutes />, { route: '/login' });
    await user.type(screen.getByLabelText(/Email/), 'reader@example.org');
    await user.type(screen.getByLabelText(/Password/), 'wrong-password');
    await user.click(screen.getByRole('button', { name: 'Log in' }));
    const alert = await screen.findByRole('alert');
    expect(alert).toHaveTextContent('Log-in failed');
    expect(alert).toHaveTextContent('Incorrect email or password.');
    expect(getToken()).toBeNull();
  });

  it('validates the form before calling the server', async () => {
    const fetchMock = mockFetch(() => json(500, {}));
    const user = userEvent.setup();
    renderWithProviders(<AppRoutes />, { route: '/login' });
    await user.type(screen.getByLabelText(/Email/), 'not-an-email');
    await user.click(screen.getByRole('button', { name: 'Log in' }));
    expect(await screen.findByText(/Enter a valid email address/)).toBeInTheDocument();
    expect(screen.getByText('Enter your password.')).toBeInTheDocument();
    expect(fetchMock).not.toHaveBeenCalled();
  });

  it('stores the token for the session and sends it afterwards', async () => {
    const seen: Array<string | null> = [];
    mockFetch((path, request) => {
      seen.push(request.headers.get('Authorization'));
      if (path === '/auth/token') {
        return json(200, {
          access_token: 'tok123',
          token_type: 'bearer',
          expires_in: 3600,
          expires_at: new Date(Date.now() + 3600_000).toISOString(),
        });
      }
      if (path === '/models') return json(200, []);
      if (path === '/auth/me') {
        return json(200, { id: '1', email: 'reader@example.org', role: 'user', created_at: new Date().toISOString() });
      }
      return json(404, { code: 'not_found', message: 'No.' });
    });
    const user = userEvent.setup();
    renderWithProviders(<AppRoutes />, { route: '/login' });
    await user.type(screen.getByLabelText(/Email/), 'reader@example.org');
    await user.type(screen.getByLabelText(/Password/), 'a long passphrase');
    await user.click(screen.getByRole('button', { name: 'Log in' }));
    expect(await screen.findByRole('heading', { name: 'Analyze a slice' })).toBeInTheDocument();
    expect(getToken()).toBe('tok123');
    expect(window.sessionStorage.getItem('spondyscan.token')).toBe('tok123');
    await waitFor(() => expect(seen).toContain('Bearer tok123'));
  });
});

describe('session expiry', () => {
  it('sends the user back to log in when the API answers 401', async () => {
    saveSession('expired-token', null);
    mockFetch(() => json(401, { code: 'token_expired', message: 'The access token has expired; log in again.' }));
    renderWithProviders(<AppRoutes />, { route: '/history' });
    expect(await screen.findByRole('heading', { name: 'Log in' })).toBeInTheDocument();
    expect(screen.getByText(/Your session has ended/)).toBeInTheDocument();
    expect(getToken()).toBeNull();
  });

  it('guards pages when there is no session', async () => {
    mockFetch(() => json(500, {}));
    renderWithProviders(<AppRoutes />, { route: '/models' });
    expect(await screen.findByRole('heading', { name: 'Log in' })).toBeInTheDocument();
  });
});
