import { client } from '../client/client.gen';
import { toApiError } from './errors';
import { clearSession, getToken } from './session';

let configured = false;

/**
 * Wire the generated client to the session: every request carries the bearer token, and a 401
 * on a request that carried one ends the session (the router then shows the log-in page).
 */
export function configureClient(baseUrl: string = import.meta.env.VITE_API_BASE ?? ''): void {
  // API answers are private and change with every action: never reuse one from the HTTP cache.
  client.setConfig({ baseUrl, cache: 'no-store' });
  if (configured) return;
  configured = true;

  client.interceptors.request.use((request) => {
    const token = getToken();
    if (token && !request.headers.has('Authorization')) {
      request.headers.set('Authorization', `Bearer ${token}`);
    }
    if (!request.headers.has('Accept')) request.headers.set('Accept', 'application/json');
    return request;
  });

  client.interceptors.response.use((response, request) => {
    if (response.status === 401 && request.headers.get('Authorization')?.startsWith('Bearer ')) {
      clearSession('expired');
    }
    return response;
  });

  client.interceptors.error.use((error, response) => toApiError(error, response));
}

export { client };
