import { Anchor, Badge, Button, Group, Paper, Stack, Table, Text, Title } from '@mantine/core';
import { IconArrowLeft, IconFileSearch, IconPlayerStop, IconStack2 } from '@tabler/icons-react';
import { Link, useParams } from 'react-router-dom';
import { ApiError } from '../api/errors';
import { useCancelJob, useJob } from '../api/queries';
import type { JobItemPublic, JobPublic } from '../client/types.gen';
import { DownloadButton } from '../components/DownloadButton';
import { ErrorAlert } from '../components/ErrorAlert';
import { PageHeader } from '../components/PageHeader';
import { ResearchNotice } from '../components/ResearchNotice';
import { JobProgressBar, RunStatusBadge } from '../components/RunStatus';
import { EmptyState, PageLoader } from '../components/States';
import { formatBytes, formatDateTime, formatPercent } from '../lib/format';
import { statusColor } from '../lib/results';
import { downloadName, isOpenStatus } from '../lib/studies';
import { usePageTitle } from '../lib/usePageTitle';

interface ItemOutcome {
  model: string;
  as_status: string | null;
  stage: string | null;
  p_positive: number | null;
}

/** The first model's answer from an item's result summary (a batch analysis or a study). */
export function itemOutcome(result: Record<string, unknown> | null | undefined): ItemOutcome | null {
  if (!result) return null;
  const list = Array.isArray(result.classifications) ? result.classifications : Array.isArray(result.models) ? result.models : [];
  const first = list[0] as Record<string, unknown> | undefined;
  if (!first) return null;
  return {
    model: String(first.model ?? ''),
    as_status: typeof first.as_status === 'string' ? first.as_status : null,
    stage: typeof first.stage === 'string' ? first.stage : null,
    p_positive: typeof first.p_positive === 'number' ? first.p_positive : null,
  };
}

function ItemRow({ item, job }: { item: JobItemPublic; job: JobPublic }) {
  const outcome = itemOutcome(item.result);
  const name = item.filename ?? `item ${item.index + 1}`;
  const link = job.kind === 'study' && job.study_id ? `/studies/${job.study_id}` : item.analysis_id ? `/history/${item.analysis_id}` : null;
  return (
    <Table.Tr data-testid="job-item" data-status={item.status}>
      <Table.Td>{item.index + 1}</Table.Td>
      <Table.Th scope="row" fw={500}>
        <Text size="sm" style={{ wordBreak: 'break-all' }}>
          {name}
        </Text>
        <Text size="xs" c="dimmed">
          {formatBytes(item.size_bytes)}
          {item.attempts > 1 ? ` · ${item.attempts} attempts` : ''}
        </Text>
      </Table.Th>
      <Table.Td>
        <RunStatusBadge status={item.status} size="sm" />
      </Table.Td>
      <Table.Td>
        {item.error ? (
          <Stack gap={0}>
            <Text size="xs" ff="monospace" c="red.9">
              {item.error.code}
            </Text>
            <Text size="sm">{item.error.message}</Text>
          </Stack>
        ) : outcome?.as_status ? (
          <Group gap={4}>
            <Badge color={statusColor(outcome.as_status)} variant="light">
              {outcome.as_status}
              {outcome.p_positive != null ? ` · P+ ${formatPercent(outcome.p_positive)}` : ''}
            </Badge>
            {outcome.stage && <Text size="sm">{outcome.stage}</Text>}
          </Group>
        ) : item.status === 'done' ? (
          <Text size="sm" c="dimmed">
            No classification (withheld or none requested)
          </Text>
        ) : (
          <Text size="sm" c="dimmed">
            —
          </Text>
        )}
      </Table.Td>
      <Table.Td>
        {link && item.status === 'done' ? (
          <Anchor component={Link} to={link} size="sm" aria-label={`Open result: ${name}`}>
            Open result
          </Anchor>
        ) : null}
      </Table.Td>
    </Table.Tr>
  );
}

function JobView({ job }: { job: JobPublic }) {
  const cancel = useCancelJob();
  const open = isOpenStatus(job.status);
  const study = job.kind === 'study';
  return (
    <>
      <PageHeader
        title={study ? 'Study job' : 'Batch job'}
        description={
          <>
            Submitted {formatDateTime(job.created_at)}
            {job.finished_at ? ` · finished ${formatDateTime(job.finished_at)}` : ''} · models{' '}
            {job.options.models.join(', ') || 'default'}
            {job.options.explain ? ' · with heatmaps' : ''}
          </>
        }
        actions={
          <>
            <Button component={Link} to="/jobs" variant="subtle" leftSection={<IconArrowLeft size={16} aria-hidden />}>
              Jobs
            </Button>
            {study && job.study_id && (
              <Button component={Link} to={`/studies/${job.study_id}`} variant="light" leftSection={<IconStack2 size={16} aria-hidden />}>
                Open the study
              </Button>
            )}
            <DownloadButton url={job.results_csv_url} filename={downloadName('job', job.id, 'csv')} accept="text/csv,*/*" fresh data-testid="download-csv">
              results.csv
            </DownloadButton>
            <DownloadButton url={job.results_json_url} filename={downloadName('job', job.id, 'json')} accept="application/json" fresh data-testid="download-json">
              results.json
            </DownloadButton>
            {open && (
              <Button
                variant="light"
                color="orange"
                leftSection={<IconPlayerStop size={16} aria-hidden />}
                onClick={() => cancel.mutate(job.id)}
                loading={cancel.isPending}
                data-testid="cancel-job"
              >
                Cancel
              </Button>
            )}
          </>
        }
      />
      <Stack gap="lg">
        <ResearchNotice detail={job.notice} />
        {cancel.isError && <ErrorAlert error={cancel.error} title="The job could not be cancelled" />}
        <Paper withBorder p="md" component="section" aria-labelledby="job-progress-title">
          <Group justify="space-between" mb="xs">
            <Title order={2} size="h4" id="job-progress-title">
              Progress
            </Title>
            <RunStatusBadge status={job.status} />
          </Group>
          <JobProgressBar progress={job.progress} />
          {open && (
            <Text size="xs" c="dimmed" mt={4}>
              This page updates by itself.
            </Text>
          )}
        </Paper>
        <Paper withBorder component="section" aria-labelledby="job-items-title">
          <Title order={2} size="h4" id="job-items-title" p="md" pb={0}>
            Items
          </Title>
          <Table.ScrollContainer minWidth={640}>
            <Table verticalSpacing="sm" data-testid="job-items">
              <Table.Caption>
                {job.items.length} item{job.items.length === 1 ? '' : 's'}; AS status and stage are the first model&apos;s.
              </Table.Caption>
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col">#</Table.Th>
                  <Table.Th scope="col">File</Table.Th>
                  <Table.Th scope="col">Status</Table.Th>
                  <Table.Th scope="col">Outcome or error</Table.Th>
                  <Table.Th scope="col">
                    <span className="visually-hidden">Result</span>
                  </Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {job.items.map((item) => (
                  <ItemRow key={item.index} item={item} job={job} />
                ))}
              </Table.Tbody>
            </Table>
          </Table.ScrollContainer>
        </Paper>
      </Stack>
    </>
  );
}

export function JobDetailPage() {
  const { id = '' } = useParams();
  usePageTitle('Job');
  const job = useJob(id);
  if (job.isPending) return <PageLoader label="Loading the job…" />;
  if (job.isError) {
    const missing = job.error instanceof ApiError && [404, 403, 422].includes(job.error.status);
    return missing ? (
      <EmptyState
        icon={<IconFileSearch size={28} aria-hidden />}
        title="Job not found"
        action={
          <Button component={Link} to="/jobs" variant="default">
            Open jobs
          </Button>
        }
      >
        This job does not exist or belongs to another account.
      </EmptyState>
    ) : (
      <ErrorAlert error={job.error} onRetry={() => void job.refetch()} />
    );
  }
  return <JobView job={job.data} />;
}
