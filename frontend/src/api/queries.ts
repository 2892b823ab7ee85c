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
  jobsCancelJob,
  jobsCreateJob,
  jobsListJobs,
  jobsReadJob,
  modelsReadModel,
  modelsListModels,
  studiesCancelStudy,
  studiesCreateStudy,
  studiesDeleteStudy,
  studiesListStudies,
  studiesReadStudy,
} from '../client/sdk.gen';
import type {
  CamMethod,
  HistoryListHistoryData,
  JobsListJobsData,
  StudiesListStudiesData,
} from '../client/types.gen';
import { isOpenStatus } from '../lib/studies';
import { unwrap } from './errors';
import { saveSession } from './session';

export type HistoryQuery = NonNullable<HistoryListHistoryData['query']>;
export type StudyQuery = NonNullable<StudiesListStudiesData['query']>;
export type JobQuery = NonNullable<JobsListJobsData['query']>;

/** How often a running study or job is asked for its progress. */
export const POLL_MS = 1000;
/** Lists poll more gently: they only need to notice that something finished. */
export const LIST_POLL_MS = 2000;

export const queryKeys = {
  me: ['me'] as const,
  models: ['models'] as const,
  model: (key: string) => ['models', key] as const,
  history: (query: HistoryQuery) => ['history', 'list', query] as const,
  historyAll: ['history'] as const,
  result: (id: string) => ['history', 'item', id] as const,
  apiKeys: ['api-keys'] as const,
  limits: ['limits'] as const,
  studiesAll: ['studies'] as const,
  studies: (query: StudyQuery) => ['studies', 'list', query] as const,
  study: (id: string) => ['studies', 'item', id] as const,
  jobsAll: ['jobs'] as const,
  jobs: (query: JobQuery) => ['jobs', 'list', query] as const,
  job: (id: string) => ['jobs', 'item', id] as const,
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
    // Models warm up in the background after start-up: poll until every one is ready.
    refetchInterval: (q) => (q.state.data?.some((m) => m.ready === false) ? LIST_POLL_MS : false),
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
    mutationFn: ({
      file,
      models,
      allowOutOfDomain = false,
      method,
      segmentationModel,
    }: {
      file: File;
      models: string[];
      allowOutOfDomain?: boolean;
      method?: CamMethod;
      /** A segmenter's key; the server's default segmenter when absent. */
      segmentationModel?: string;
    }) =>
      unwrap(
        inferenceAnalyze({
          body: {
            file,
            models,
            allow_out_of_domain: allowOutOfDomain,
            method,
            segmentation_model: segmentationModel,
          },
        }),
      ),
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

// ----------------------------------------------------------------------------- studies

export interface NewStudy {
  files: File[];
  models: string[];
  explain: boolean;
  allowOutOfDomain: boolean;
  /** A segmenter's key; the server's default segmenter when absent. */
  segmentationModel?: string;
}

export function useCreateStudy() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: ({ files, models, explain, allowOutOfDomain, segmentationModel }: NewStudy) =>
      unwrap(
        studiesCreateStudy({
          body: { files, models, explain, allow_out_of_domain: allowOutOfDomain, segmentation_model: segmentationModel },
        }),
      ),
    onSuccess: (study) => {
      queryClient.setQueryData(queryKeys.study(study.id), study);
      void queryClient.invalidateQueries({ queryKey: ['studies', 'list'] });
      void queryClient.invalidateQueries({ queryKey: ['jobs', 'list'] });
    },
  });
}

export function useStudies(query: StudyQuery) {
  return useQuery({
    queryKey: queryKeys.studies(query),
    queryFn: () => unwrap(studiesListStudies({ query })),
    placeholderData: keepPreviousData,
    refetchInterval: (q) => (q.state.data?.items.some((s) => isOpenStatus(s.status)) ? LIST_POLL_MS : false),
  });
}

/** A study, asked again every second until it is done, failed or cancelled. */
export function useStudy(id: string) {
  const queryClient = useQueryClient();
  return useQuery({
    queryKey: queryKeys.study(id),
    queryFn: async () => {
      const study = await unwrap(studiesReadStudy({ path: { study_id: id } }));
      // The list and history learn about a finished study without waiting for their own poll.
      const previous = queryClient.getQueryData<typeof study>(queryKeys.study(id));
      if (previous && previous.status !== study.status) {
        void queryClient.invalidateQueries({ queryKey: ['studies', 'list'] });
        void queryClient.invalidateQueries({ queryKey: queryKeys.historyAll });
      }
      return study;
    },
    refetchInterval: (q) => {
      if (q.state.status === 'error') return false;
      const status = q.state.data?.status;
      return status === undefined || isOpenStatus(status) ? POLL_MS : false;
    },
  });
}

export function useCancelStudy() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) => unwrap(studiesCancelStudy({ path: { study_id: id } })),
    onSuccess: (study) => {
      queryClient.setQueryData(queryKeys.study(study.id), study);
      void queryClient.invalidateQueries({ queryKey: ['studies', 'list'] });
      void queryClient.invalidateQueries({ queryKey: ['jobs'] });
    },
  });
}

export function useDeleteStudy() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) => unwrap(studiesDeleteStudy({ path: { study_id: id } })),
    onSuccess: (_data, id) => {
      queryClient.removeQueries({ queryKey: queryKeys.study(id) });
      queryClient.removeQueries({ queryKey: queryKeys.result(id) });
      void queryClient.invalidateQueries({ queryKey: queryKeys.studiesAll });
      void queryClient.invalidateQueries({ queryKey: queryKeys.historyAll });
      void queryClient.invalidateQueries({ queryKey: queryKeys.jobsAll });
    },
  });
}

// ----------------------------------------------------------------------------- jobs

export interface NewJob {
  files: File[];
  models: string[];
  explain: boolean;
  allowOutOfDomain?: boolean;
}

export function useCreateJob() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: ({ files, models, explain, allowOutOfDomain }: NewJob) =>
      unwrap(jobsCreateJob({ body: { files, models, explain, allow_out_of_domain: allowOutOfDomain ?? false } })),
    onSuccess: (job) => {
      queryClient.setQueryData(queryKeys.job(job.id), job);
      void queryClient.invalidateQueries({ queryKey: ['jobs', 'list'] });
    },
  });
}

export function useJobs(query: JobQuery) {
  return useQuery({
    queryKey: queryKeys.jobs(query),
    queryFn: () => unwrap(jobsListJobs({ query })),
    placeholderData: keepPreviousData,
    refetchInterval: (q) => (q.state.data?.items.some((j) => isOpenStatus(j.status)) ? LIST_POLL_MS : false),
  });
}

export function useJob(id: string) {
  const queryClient = useQueryClient();
  return useQuery({
    queryKey: queryKeys.job(id),
    queryFn: async () => {
      const job = await unwrap(jobsReadJob({ path: { job_id: id } }));
      const previous = queryClient.getQueryData<typeof job>(queryKeys.job(id));
      if (previous && previous.progress.finished !== job.progress.finished) {
        // Finished items are new analyses in history.
        void queryClient.invalidateQueries({ queryKey: queryKeys.historyAll });
        void queryClient.invalidateQueries({ queryKey: ['jobs', 'list'] });
      }
      return job;
    },
    refetchInterval: (q) => {
      if (q.state.status === 'error') return false;
      const status = q.state.data?.status;
      return status === undefined || isOpenStatus(status) ? POLL_MS : false;
    },
  });
}

export function useCancelJob() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) => unwrap(jobsCancelJob({ path: { job_id: id } })),
    onSuccess: (job) => {
      queryClient.setQueryData(queryKeys.job(job.id), job);
      void queryClient.invalidateQueries({ queryKey: ['jobs', 'list'] });
      if (job.study_id) void queryClient.invalidateQueries({ queryKey: queryKeys.study(job.study_id) });
    },
  });
}
