import { useQuery } from '@tanstack/react-query';
import { useEffect, useState } from 'react';
import { client } from '../client/client.gen';
import { toApiError } from './errors';

/**
 * Artifacts (input slice, masks, heatmaps, plots) are private: they are fetched with the same
 * credentials as the API and shown through short-lived blob: URLs, never as public links.
 */
export async function fetchArtifact(
  url: string,
  { fresh = false, accept }: { fresh?: boolean; accept?: string } = {},
): Promise<Blob> {
  const result = await client.get({
    url,
    parseAs: 'blob',
    // Artifacts never change once written; let the server's private Cache-Control apply.
    // Files that grow (a running job's results) are asked for afresh.
    cache: fresh ? 'no-store' : 'default',
    headers: { Accept: accept ?? 'image/png,image/*,application/json;q=0.9,*/*;q=0.5' },
  });
  if (result.error !== undefined || !result.response?.ok) {
    throw toApiError(result.error, result.response);
  }
  return result.data as Blob;
}

export function useArtifactBlob(url: string | null | undefined) {
  return useQuery({
    queryKey: ['artifact', url],
    queryFn: () => fetchArtifact(url as string),
    enabled: Boolean(url),
    staleTime: Infinity,
    gcTime: 5 * 60 * 1000,
    retry: 1,
  });
}

// How long a replaced blob: URL stays valid, so an image still decoding it is not cut off.
const REVOKE_DELAY_MS = 10_000;

/** A blob: URL for a Blob, revoked (after a grace period) when the blob changes or goes away. */
export function useObjectUrl(blob: Blob | null | undefined): string | null {
  const [state, setState] = useState<{ blob: Blob; url: string } | null>(null);
  useEffect(() => {
    if (!blob) {
      setState(null);
      return undefined;
    }
    const url = URL.createObjectURL(blob);
    setState({ blob, url });
    return () => {
      window.setTimeout(() => URL.revokeObjectURL(url), REVOKE_DELAY_MS);
    };
  }, [blob]);
  // Never hand out the URL of a previous blob while the new one is being prepared.
  return state && state.blob === blob ? state.url : null;
}

/** Fetch an artifact and return a blob: URL for it, plus the query state. */
export function useArtifactUrl(url: string | null | undefined) {
  const query = useArtifactBlob(url);
  const objectUrl = useObjectUrl(query.data);
  return { url: objectUrl, isLoading: query.isLoading, isError: query.isError, error: query.error };
}

/** Save a Blob under a file name through a temporary link. */
export function saveBlob(blob: Blob, filename: string): void {
  const objectUrl = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = objectUrl;
  link.download = filename;
  link.rel = 'noopener';
  document.body.appendChild(link);
  link.click();
  link.remove();
  // Give the browser a moment to start the download before the URL goes away.
  window.setTimeout(() => URL.revokeObjectURL(objectUrl), 1000);
}
