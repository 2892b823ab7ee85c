import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import {
  inferenceAnalyze,
  authChangePassword,
  authCreateApiKey,
  authListApiKeys,
  authLogin,
  authReadMe,
  authRevokeApiKey,
  authSignup,
  historyDeleteHistoryEntry,
  historyReadHistoryEntry,
  historyListHistory,
  healthLimits,
  modelsReadModel,
  modelsListModels,
} from '../client/sdk.gen';
import type { HistoryListHistoryData } from '../client/types.gen';
import { unwrap } from './errors';
import { saveSession } from './session';

export type HistoryQuery = NonNullable<HistoryListHistoryData['query']>;

export const queryKeys = {
  me: ['me'] as const,
  models: ['models'] as const,
  model: (key: string) => ['models', key] as const,
  history: (query: HistoryQuery) => ['history', 'list', query] as const,
  historyAll: ['history'] as const,
  result: (id: string) => ['history', 'item', id] as const,
  apiKeys: ['api-keys'] as const,
  limits: ['limits'] as const,
};

export function useMe(enabled = true) {
  return useQuery({
    queryKey: queryKeys.me,
    queryFn: () => unwrap(authReadMe()),
    enabled,
    staleTime: 5 * 60 * 1000,
  });
}

export async function logIn(email: string, password: string) {
  const token = await unwrap(authLogin({ body: { username: email, password } }));
  saveSession(token.access_token, token.expires_at);
  return token;
}

export function useLogin() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: ({ email, password }: { email: string; password: string }) => logIn(email, password),
    onSuccess: () => queryClient.removeQueries(),
  });
}

export function useSignup() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async ({ email, password }: { email: string; password: string }) => {
      await unwrap(authSignup({ body: { email, password } }));
      return logIn(email, password);
    },
    onSuccess: () => queryClient.removeQueries(),
  });
}

/** What the server accepts (upload size, models per request, password length): its settings. */
export function useLimits() {
  return useQuery({
    queryKey: queryKeys.limits,
    queryFn: () => unwrap(healthLimits()),
    staleTime: Infinity,
  });
}

export function useModels() {
  return useQuery({
    queryKey: queryKeys.models,
    queryFn: () => unwrap(modelsListModels()),
    staleTime: 5 * 60 * 1000,
  });
}

export function useModelCard(key: string) {
  return useQuery({
    queryKey: queryKeys.model(key),
    queryFn: () => unwrap(modelsReadModel({ path: { key } })),
    staleTime: 5 * 60 * 1000,
  });
}

export function useCreateAnalysis() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: ({ file, models }: { file: File; models: string[] }) =>
      unwrap(inferenceAnalyze({ body: { file, models } })),
    onSuccess: (result) => {
      queryClient.setQueryData(queryKeys.result(result.id), result);
      void queryClient.invalidateQueries({ queryKey: ['history', 'list'] });
    },
  });
}

export function useHistory(query: HistoryQuery) {
  return useQuery({
    queryKey: queryKeys.history(query),
    queryFn: () => unwrap(historyListHistory({ query })),
    placeholderData: keepPreviousData,
  });
}

export function useResult(id: string) {
  return useQuery({
    queryKey: queryKeys.result(id),
    queryFn: () => unwrap(historyReadHistoryEntry({ path: { analysis_id: id } })),
    staleTime: Infinity,
  });
}

export function useDeleteResult() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) => unwrap(historyDeleteHistoryEntry({ path: { analysis_id: id } })),
    onSuccess: (_data, id) => {
      queryClient.removeQueries({ queryKey: queryKeys.result(id) });
      void queryClient.invalidateQueries({ queryKey: queryKeys.historyAll });
    },
  });
}

/** Change the password; earlier tokens stop working, so the new token replaces the session's. */
export function useChangePassword() {
  return useMutation({
    mutationFn: async ({ current, next }: { current: string; next: string }) => {
      const token = await unwrap(
        authChangePassword({ body: { current_password: current, new_password: next } }),
      );
      saveSession(token.access_token, token.expires_at);
      return token;
    },
  });
}

export function useApiKeys() {
  return useQuery({ queryKey: queryKeys.apiKeys, queryFn: () => unwrap(authListApiKeys()) });
}

export function useCreateApiKey() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (name: string) => unwrap(authCreateApiKey({ body: { name } })),
    onSuccess: () => void queryClient.invalidateQueries({ queryKey: queryKeys.apiKeys }),
  });
}

export function useRevokeApiKey() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) => unwrap(authRevokeApiKey({ path: { key_id: id } })),
    onSuccess: () => void queryClient.invalidateQueries({ queryKey: queryKeys.apiKeys }),
  });
}
