import {
  Anchor,
  Badge,
  Button,
  Checkbox,
  Grid,
  Group,
  Pagination,
  Paper,
  Select,
  SimpleGrid,
  Skeleton,
  Stack,
  Switch,
  Table,
  Text,
  Title,
} from '@mantine/core';
import { notifications } from '@mantine/notifications';
import { IconCpu, IconListCheck, IconPlayerPlay } from '@tabler/icons-react';
import { useEffect, useState } from 'react';
import { Link, useSearchParams } from 'react-router-dom';
import { useCreateJob, useJobs, useLimits, useModels, type JobQuery } from '../api/queries';
import type { JobSummary } from '../client/types.gen';
import { ErrorAlert } from '../components/ErrorAlert';
import { ChosenFiles, FilesPicker } from '../components/FilesPicker';
import { defaultSelection, ModelPicker, selectionError } from '../components/ModelPicker';
import { PageHeader } from '../components/PageHeader';
import { ResearchNotice } from '../components/ResearchNotice';
import { JobProgressBar, RunStatusBadge } from '../components/RunStatus';
import { CardsSkeleton, EmptyState } from '../components/States';
import { formatBytes, formatDateTime } from '../lib/format';
import { JOB_STATUSES, STATUS_LABELS, uploadShape, type JobStatus } from '../lib/studies';
import { usePageTitle } from '../lib/usePageTitle';

export const JOBS_PAGE_SIZE = 10;

const isJobStatus = (v: string | null): v is JobStatus => (JOB_STATUSES as string[]).includes(v ?? '');

/** Batch jobs only unless the address asks for study jobs too (`?studies=1`). */
export function jobQueryFromParams(params: URLSearchParams): JobQuery {
  const page = Math.max(1, Number(params.get('page') ?? '1') || 1);
  const status = params.get('status');
  return {
    limit: JOBS_PAGE_SIZE,
    offset: (page - 1) * JOBS_PAGE_SIZE,
    status: isJobStatus(status) ? status : undefined,
    kind: params.get('studies') === '1' ? undefined : 'batch',
  };
}

function NewJobForm() {
  const models = useModels();
  const limits = useLimits().data;
  const create = useCreateJob();
  const [files, setFiles] = useState<File[]>([]);
  const [dropped, setDropped] = useState(0);
  const [selected, setSelected] = useState<string[] | null>(null);
  const [explain, setExplain] = useState(false);
  const [allowOutOfDomain, setAllowOutOfDomain] = useState(false);
  const maxModels = limits?.max_models_per_request;

  useEffect(() => {
    if (models.data && selected === null) setSelected(defaultSelection(models.data));
  }, [models.data, selected]);

  const keys = selected ?? [];
  const classifiers = models.data?.filter((m) => m.task === 'classification') ?? [];
  const bytes = files.reduce((s, f) => s + f.size, 0);
  const tooMany = limits?.job_max_items ? files.length > limits.job_max_items : false;
  const tooBig = limits?.job_max_bytes ? bytes > limits.job_max_bytes : false;
  const canRun = files.length > 0 && !tooMany && !tooBig && !selectionError(keys, maxModels) && !create.isPending;

  const run = () =>
    create.mutate(
      { files, models: keys, explain, allowOutOfDomain },
      {
        onSuccess: (job) => {
          notifications.show({
            color: 'teal',
            title: 'Batch submitted',
            message: `${job.progress.total} image${job.progress.total === 1 ? '' : 's'} queued; the list below follows its progress.`,
          });
          setFiles([]);
          setDropped(0);
        },
      },
    );

  return (
    <Grid gutter="lg" component="section" aria-labelledby="new-job">
      <Grid.Col span={12}>
        <Title order={2} size="h3" id="new-job">
          New batch
        </Title>
      </Grid.Col>
      <Grid.Col span={{ base: 12, md: 7 }}>
        <Stack gap="md">
          <FilesPicker
            testId="job"
            title="Drop slices here, or click to browse"
            hint={
              <>
                Several images (PNG, JPEG, DICOM, NIfTI, .npy) or one zip of them; each becomes its own analysis in your history
                {limits ? ` (at most ${limits.job_max_items} files, ${formatBytes(limits.job_max_bytes)} in all)` : ''}.
              </>
            }
            disabled={create.isPending}
            onFiles={(picked, junk) => {
              create.reset();
              setFiles(picked);
              setDropped(junk);
            }}
          />
          {files.length > 0 && (
            <ChosenFiles
              files={files}
              dropped={dropped}
              description={uploadShape(files.map((f) => f.name)) === 'zip' ? 'One zip of images' : 'Images, one analysis each'}
              onClear={() => {
                setFiles([]);
                setDropped(0);
                create.reset();
              }}
              disabled={create.isPending}
            />
          )}
          {(tooMany || tooBig) && (
            <Text size="sm" c="red.8" role="alert">
              {tooMany
                ? `A batch holds at most ${limits?.job_max_items} files.`
                : `A batch holds at most ${formatBytes(limits?.job_max_bytes ?? 0)}.`}
            </Text>
          )}
        </Stack>
      </Grid.Col>
      <Grid.Col span={{ base: 12, md: 5 }}>
        <Stack gap="md">
          {models.isPending && <CardsSkeleton count={2} height={84} />}
          {models.isError && <ErrorAlert error={models.error} onRetry={() => void models.refetch()} />}
          {models.data && classifiers.length === 0 && (
            <EmptyState icon={<IconCpu size={28} aria-hidden />} title="No classification models installed">
              The server has no classifier bundles.
            </EmptyState>
          )}
          {models.data && classifiers.length > 0 && (
            <ModelPicker models={models.data} value={keys} onChange={setSelected} max={maxModels} disabled={create.isPending} />
          )}
          <Checkbox
            label="Heatmap for each model"
            description="Slower: a Grad-CAM explanation per image and model."
            checked={explain}
            onChange={(e) => setExplain(e.currentTarget.checked)}
            disabled={create.isPending}
            data-testid="job-explain"
          />
          <Checkbox
            label="Show model outputs even for images unlike the training slices"
            description="By default the outputs for such images are withheld and the item says why."
            checked={allowOutOfDomain}
            onChange={(e) => setAllowOutOfDomain(e.currentTarget.checked)}
            disabled={create.isPending}
            data-testid="job-allow-out-of-domain"
          />
          <Button
            size="md"
            leftSection={<IconPlayerPlay size={18} aria-hidden />}
            onClick={run}
            disabled={!canRun}
            loading={create.isPending}
            data-testid="run-job"
          >
            Submit the batch
          </Button>
          {create.isError && <ErrorAlert error={create.error} onRetry={run} />}
        </Stack>
      </Grid.Col>
    </Grid>
  );
}

function JobRow({ job }: { job: JobSummary }) {
  const study = job.kind === 'study';
  return (
    <Table.Tr data-testid="job-row">
      <Table.Td>
        <Anchor component={Link} to={`/jobs/${job.id}`} fw={600} size="sm">
          {formatDateTime(job.created_at)}
        </Anchor>
        <Text size="xs" c="dimmed">
          {job.options.models.join(', ') || 'default models'}
          {job.options.explain ? ' · heatmaps' : ''}
        </Text>
      </Table.Td>
      <Table.Td>
        <Badge variant="outline" color={study ? 'grape' : 'gray'} tt="none">
          {study ? 'Study' : 'Batch'}
        </Badge>
      </Table.Td>
      <Table.Td>
        <RunStatusBadge status={job.status} size="sm" />
      </Table.Td>
      <Table.Td>
        <JobProgressBar progress={job.progress} label={`Progress of the job of ${formatDateTime(job.created_at)}`} />
      </Table.Td>
      <Table.Td>
        <Group gap={4} justify="flex-end" wrap="nowrap">
          {study && job.study_id && (
            <Button component={Link} to={`/studies/${job.study_id}`} size="compact-sm" variant="light">
              Open study
            </Button>
          )}
          <Button component={Link} to={`/jobs/${job.id}`} size="compact-sm" variant={study ? 'subtle' : 'light'} aria-label={`Details of the job of ${formatDateTime(job.created_at)}`}>
            Details
          </Button>
        </Group>
      </Table.Td>
    </Table.Tr>
  );
}

function JobList() {
  const [params, setParams] = useSearchParams();
  const query = jobQueryFromParams(params);
  const page = Math.floor((query.offset ?? 0) / JOBS_PAGE_SIZE) + 1;
  const jobs = useJobs(query);
  const total = jobs.data?.total ?? 0;
  const pages = Math.max(1, Math.ceil(total / JOBS_PAGE_SIZE));
  const setParam = (name: string, value: string | null) => {
    const next = new URLSearchParams(params);
    if (value) next.set(name, value);
    else next.delete(name);
    if (name !== 'page') next.delete('page');
    setParams(next, { replace: true });
  };
  // The address updates in a transition; the switch answers the click at once.
  const includeStudies = params.get('studies') === '1';
  const [studiesShown, setStudiesShown] = useState(includeStudies);
  useEffect(() => setStudiesShown(includeStudies), [includeStudies]);

  return (
    <Stack gap="md" component="section" aria-labelledby="your-jobs">
      <Title order={2} size="h3" id="your-jobs">
        Your jobs
      </Title>
      <Paper withBorder p="md" component="section" aria-label="Job filters">
        <SimpleGrid cols={{ base: 1, xs: 2, md: 3 }} spacing="sm" style={{ alignItems: 'end' }}>
          <Select
            label="Status"
            placeholder="Any status"
            data={JOB_STATUSES.map((s) => ({ value: s, label: STATUS_LABELS[s] ?? s }))}
            value={params.get('status')}
            onChange={(v) => setParam('status', v)}
            clearable
            data-testid="jobs-filter-status"
          />
          <Switch
            label="Include study jobs"
            description="Whole-series studies run as jobs too"
            checked={studiesShown}
            onChange={(e) => {
              const on = e.currentTarget.checked;
              setStudiesShown(on);
              setParam('studies', on ? '1' : null);
            }}
            data-testid="jobs-include-studies"
          />
        </SimpleGrid>
      </Paper>
      {jobs.isError && <ErrorAlert error={jobs.error} onRetry={() => void jobs.refetch()} />}
      {jobs.isPending && (
        <Stack gap="xs" aria-busy="true" aria-label="Loading jobs">
          {Array.from({ length: 3 }, (_, i) => (
            <Skeleton key={i} height={56} radius="md" />
          ))}
        </Stack>
      )}
      {jobs.data && jobs.data.items.length === 0 && (
        <EmptyState icon={<IconListCheck size={28} aria-hidden />} title="No jobs yet">
          Submit a batch above; it appears here with its progress.
        </EmptyState>
      )}
      {jobs.data && jobs.data.items.length > 0 && (
        <Paper withBorder>
          <Table.ScrollContainer minWidth={760}>
            <Table verticalSpacing="sm" highlightOnHover data-testid="jobs-table" style={{ opacity: jobs.isPlaceholderData ? 0.6 : 1 }}>
              <Table.Caption>
                {total} job{total === 1 ? '' : 's'} · page {page} of {pages}
              </Table.Caption>
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col">Submitted</Table.Th>
                  <Table.Th scope="col">Kind</Table.Th>
                  <Table.Th scope="col">Status</Table.Th>
                  <Table.Th scope="col">Progress</Table.Th>
                  <Table.Th scope="col">
                    <span className="visually-hidden">Actions</span>
                  </Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {jobs.data.items.map((j) => (
                  <JobRow key={j.id} job={j} />
                ))}
              </Table.Tbody>
            </Table>
          </Table.ScrollContainer>
        </Paper>
      )}
      {pages > 1 && (
        <Group justify="center">
          <Pagination
            total={pages}
            value={Math.min(page, pages)}
            onChange={(p) => setParam('page', String(p))}
            getControlProps={(control) => ({ 'aria-label': `${control} page` })}
            getItemProps={(p) => ({ 'aria-label': `Page ${p}` })}
          />
        </Group>
      )}
    </Stack>
  );
}

export function JobsPage() {
  usePageTitle('Jobs');
  return (
    <>
      <PageHeader
        title="Jobs"
        description="Analyse many slices at once. Each image becomes its own analysis in your history; follow the batch here and download its results as CSV or JSON."
      />
      <Stack gap="xl">
        <NewJobForm />
        <ResearchNotice />
        <JobList />
      </Stack>
    </>
  );
}
