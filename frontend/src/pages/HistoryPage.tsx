import {
  ActionIcon,
  Anchor,
  Badge,
  Button,
  Group,
  Pagination,
  Paper,
  Select,
  SimpleGrid,
  Skeleton,
  Stack,
  Table,
  Text,
  Tooltip,
} from '@mantine/core';
import { DatePickerInput } from '@mantine/dates';
import { notifications } from '@mantine/notifications';
import { IconFilterOff, IconHistory, IconScan, IconTrash } from '@tabler/icons-react';
import { useState } from 'react';
import { Link, useSearchParams } from 'react-router-dom';
import { AsStatus, Stage, type HistoryItem } from '../client/types.gen';
import { useDeleteResult, useDeleteStudy, useHistory, useModels, type HistoryQuery } from '../api/queries';
import { AuthImage } from '../components/AuthImage';
import { ConfirmDelete } from '../components/ConfirmDelete';
import { ErrorAlert } from '../components/ErrorAlert';
import { PageHeader } from '../components/PageHeader';
import { EmptyState } from '../components/States';
import { formatDateTime, formatPercent } from '../lib/format';
import { STAGE_ORDER, statusColor } from '../lib/results';
import { usePageTitle } from '../lib/usePageTitle';

const PAGE_SIZE = 10;

const STATUS_OPTIONS = Object.values(AsStatus).map((value) => ({
  value,
  label: value.charAt(0).toUpperCase() + value.slice(1),
}));

const isStatus = (value: string | null): value is AsStatus =>
  (Object.values(AsStatus) as string[]).includes(value ?? '');
const isStage = (value: string | null): value is Stage =>
  (Object.values(Stage) as string[]).includes(value ?? '');

/**
 * A calendar day picked in the browser, as the instant it starts (or ends) in the user's time
 * zone, so "today" means the user's today and not the server's UTC day.
 */
export function localDayBound(day: string | null, end: boolean): string | undefined {
  const match = day ? /^(\d{4})-(\d{2})-(\d{2})$/.exec(day) : null;
  if (!match) return undefined;
  const [, y, m, d] = match.map(Number) as [number, number, number, number];
  const date = end ? new Date(y, m - 1, d, 23, 59, 59, 999) : new Date(y, m - 1, d, 0, 0, 0, 0);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

/** Filters live in the address, so a filtered page can be reloaded, shared and navigated back to. */
export function historyQueryFromParams(params: URLSearchParams): HistoryQuery {
  const page = Math.max(1, Number(params.get('page') ?? '1') || 1);
  const status = params.get('status');
  const stage = params.get('stage');
  return {
    limit: PAGE_SIZE,
    offset: (page - 1) * PAGE_SIZE,
    date_from: localDayBound(params.get('from'), false),
    date_to: localDayBound(params.get('to'), true),
    as_status: isStatus(status) ? status : undefined,
    stage: isStage(stage) ? stage : undefined,
    model: params.get('model') || undefined,
  };
}

/** Studies (whole series) open on their own page; single-image results on the result page. */
export function historyLink(item: Pick<HistoryItem, 'id' | 'kind'>): string {
  return item.kind === 'study' ? `/studies/${item.id}` : `/history/${item.id}`;
}

export function historyName(item: Pick<HistoryItem, 'filename' | 'kind'>): string {
  if (item.kind === 'study') return item.filename ?? 'Series study';
  return item.filename ?? 'slice';
}

function HistoryRow({ item, onDelete }: { item: HistoryItem; onDelete: (item: HistoryItem) => void }) {
  const name = historyName(item);
  const href = historyLink(item);
  return (
    <Table.Tr data-testid="history-row">
      <Table.Td>
        <Link to={href} tabIndex={-1} aria-hidden>
          <AuthImage url={item.image_url} alt={`Thumbnail of ${name}`} height={56} />
        </Link>
      </Table.Td>
      <Table.Td>
        <Group gap={6} wrap="nowrap">
          <Anchor component={Link} to={href} fw={600} size="sm">
            {name}
          </Anchor>
          {item.kind === 'study' && (
            <Badge size="xs" variant="light" color="grape">
              Study
            </Badge>
          )}
        </Group>
        <Text size="xs" c="dimmed">
          {formatDateTime(item.created_at)}
        </Text>
      </Table.Td>
      <Table.Td>
        {item.as_status ? (
          <Badge color={statusColor(item.as_status)} variant="light">
            {item.as_status}
            {item.as_confidence != null ? ` · ${formatPercent(item.as_confidence)}` : ''}
          </Badge>
        ) : (
          <Text size="sm" c="dimmed">
            —
          </Text>
        )}
      </Table.Td>
      <Table.Td>
        <Text size="sm">{item.stage ?? '—'}</Text>
      </Table.Td>
      <Table.Td>
        <Group gap={4}>
          {item.models.map((m) => (
            <Badge key={m} variant="outline" color="gray" size="sm" tt="none">
              {m}
            </Badge>
          ))}
        </Group>
      </Table.Td>
      <Table.Td>
        <Group gap={4} justify="flex-end" wrap="nowrap">
          <Button component={Link} to={href} size="compact-sm" variant="light">
            Open
          </Button>
          <Tooltip label="Delete">
            <ActionIcon
              variant="subtle"
              color="red"
              aria-label={`Delete ${name}`}
              onClick={() => onDelete(item)}
              data-testid="delete-row"
            >
              <IconTrash size={16} aria-hidden />
            </ActionIcon>
          </Tooltip>
        </Group>
      </Table.Td>
    </Table.Tr>
  );
}

export function HistoryPage() {
  usePageTitle('History');
  const [params, setParams] = useSearchParams();
  const query = historyQueryFromParams(params);
  const page = Math.floor((query.offset ?? 0) / PAGE_SIZE) + 1;
  const history = useHistory(query);
  const models = useModels();
  const removeResult = useDeleteResult();
  const removeStudy = useDeleteStudy();
  const [pending, setPending] = useState<HistoryItem | null>(null);
  const remove = pending?.kind === 'study' ? removeStudy : removeResult;

  const setParam = (name: string, value: string | null | undefined) => {
    const next = new URLSearchParams(params);
    if (value) next.set(name, value);
    else next.delete(name);
    if (name !== 'page') next.delete('page');
    setParams(next, { replace: true });
  };
  const filtered = ['from', 'to', 'status', 'stage', 'model'].some((k) => params.get(k));
  const total = history.data?.total ?? 0;
  const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));

  const confirmDelete = () => {
    if (!pending) return;
    const name = pending.kind === 'study' ? 'The study' : (pending.filename ?? 'the result');
    remove.mutate(pending.id, {
      onSuccess: () => {
        setPending(null);
        notifications.show({ color: 'teal', title: 'Deleted', message: `${name} was deleted.` });
        // Step back when the last row of the last page is gone.
        if (history.data && history.data.items.length === 1 && page > 1) setParam('page', String(page - 1));
      },
    });
  };

  return (
    <>
      <PageHeader
        title="History"
        description="Every analysis you ran, newest first. Only you can see your results."
        actions={
          <Button component={Link} to="/analyze" leftSection={<IconScan size={16} aria-hidden />}>
            New analysis
          </Button>
        }
      />
      <Paper withBorder p="md" mb="md" component="section" aria-label="Filters">
        <SimpleGrid cols={{ base: 1, xs: 2, md: 4 }} spacing="sm">
          <DatePickerInput
            type="range"
            label="Date range"
            placeholder="Any date"
            clearable
            value={[params.get('from'), params.get('to')]}
            onChange={([from, to]) => {
              const next = new URLSearchParams(params);
              for (const [key, value] of [['from', from], ['to', to]] as const) {
                if (value) next.set(key, String(value).slice(0, 10));
                else next.delete(key);
              }
              next.delete('page');
              setParams(next, { replace: true });
            }}
            maxDate={new Date()}
            data-testid="filter-dates"
          />
          <Select
            label="AS status"
            placeholder="Any status"
            data={STATUS_OPTIONS}
            value={params.get('status')}
            onChange={(value) => setParam('status', value)}
            clearable
            data-testid="filter-status"
          />
          <Select
            label="Stage"
            placeholder="Any stage"
            data={STAGE_ORDER}
            value={params.get('stage')}
            onChange={(value) => setParam('stage', value)}
            clearable
            data-testid="filter-stage"
          />
          <Select
            label="Model"
            placeholder="Any model"
            data={(models.data ?? []).map((m) => ({ value: m.key, label: m.display_name }))}
            value={params.get('model')}
            onChange={(value) => setParam('model', value)}
            clearable
            searchable
            data-testid="filter-model"
          />
        </SimpleGrid>
        {filtered && (
          <Group justify="flex-end" mt="sm">
            <Button
              variant="subtle"
              size="compact-sm"
              leftSection={<IconFilterOff size={14} aria-hidden />}
              onClick={() => setParams(new URLSearchParams(), { replace: true })}
            >
              Clear filters
            </Button>
          </Group>
        )}
      </Paper>

      {history.isError && <ErrorAlert error={history.error} onRetry={() => void history.refetch()} />}
      {history.isPending && (
        <Stack gap="xs" aria-busy="true" aria-label="Loading history">
          {Array.from({ length: 4 }, (_, i) => (
            <Skeleton key={i} height={64} radius="md" />
          ))}
        </Stack>
      )}
      {history.data && history.data.items.length === 0 && (
        <EmptyState
          icon={<IconHistory size={28} aria-hidden />}
          title={filtered ? 'No results match these filters' : 'No analyses yet'}
          action={
            filtered ? (
              <Button variant="default" onClick={() => setParams(new URLSearchParams(), { replace: true })}>
                Clear filters
              </Button>
            ) : (
              <Button component={Link} to="/analyze">
                Analyze a slice
              </Button>
            )
          }
        >
          {filtered
            ? 'Try a wider date range or another status, stage or model.'
            : 'Results appear here after your first analysis.'}
        </EmptyState>
      )}
      {history.data && history.data.items.length > 0 && (
        <Paper withBorder>
          <Table.ScrollContainer minWidth={720}>
            <Table verticalSpacing="sm" highlightOnHover data-testid="history-table" style={{ opacity: history.isPlaceholderData ? 0.6 : 1 }}>
              <Table.Caption>
                {total} result{total === 1 ? '' : 's'}
                {filtered ? ' matching the filters' : ''} · page {page} of {pages}
              </Table.Caption>
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col" w={72}>
                    <span className="visually-hidden">Thumbnail</span>
                  </Table.Th>
                  <Table.Th scope="col">Image and date</Table.Th>
                  <Table.Th scope="col">AS status</Table.Th>
                  <Table.Th scope="col">Stage</Table.Th>
                  <Table.Th scope="col">Models</Table.Th>
                  <Table.Th scope="col">
                    <span className="visually-hidden">Actions</span>
                  </Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {history.data.items.map((item) => (
                  <HistoryRow key={item.id} item={item} onDelete={setPending} />
                ))}
              </Table.Tbody>
            </Table>
          </Table.ScrollContainer>
        </Paper>
      )}
      {pages > 1 && (
        <Group justify="center" mt="md">
          <Pagination
            total={pages}
            value={Math.min(page, pages)}
            onChange={(p) => setParam('page', String(p))}
            getControlProps={(control) => ({ 'aria-label': `${control} page` })}
            getItemProps={(p) => ({ 'aria-label': `Page ${p}` })}
          />
        </Group>
      )}
      <ConfirmDelete
        opened={pending !== null}
        title="Delete this result?"
        loading={remove.isPending}
        error={remove.error}
        onConfirm={confirmDelete}
        onClose={() => {
          setPending(null);
          removeResult.reset();
          removeStudy.reset();
        }}
      >
        {pending?.kind === 'study' && (
          <>
            The study from {formatDateTime(pending.created_at)}, its uploaded series, its 3D mask and every
            slice image and heatmap will be removed permanently.
          </>
        )}
        {pending && pending.kind !== 'study' && (
          <>
            The result for <strong>{pending.filename ?? 'this slice'}</strong> from{' '}
            {formatDateTime(pending.created_at)}, its uploaded image and all its overlays will be
            removed permanently.
          </>
        )}
      </ConfirmDelete>
    </>
  );
}
