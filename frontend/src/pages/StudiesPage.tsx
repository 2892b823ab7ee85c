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
  Table,
  Text,
  Title,
} from '@mantine/core';
import { IconCpu, IconFilterOff, IconPlayerPlay, IconStack2 } from '@tabler/icons-react';
import { useEffect, useState } from 'react';
import { Link, useNavigate, useSearchParams } from 'react-router-dom';
import { useCreateStudy, useLimits, useModels, useStudies, type StudyQuery } from '../api/queries';
import { AsStatus, type StudySummary } from '../client/types.gen';
import { DomainFlag } from '../components/DomainNotice';
import { ErrorAlert } from '../components/ErrorAlert';
import { ChosenFiles, FilesPicker } from '../components/FilesPicker';
import { defaultSelection, ModelPicker, selectionError } from '../components/ModelPicker';
import { PageHeader } from '../components/PageHeader';
import { ResearchNotice } from '../components/ResearchNotice';
import { RunStatusBadge, StudyProgressBar } from '../components/RunStatus';
import { SegmenterSelect } from '../components/SegmenterSelect';
import { CardsSkeleton, EmptyState } from '../components/States';
import { capitalize, formatDateTime, formatPercent } from '../lib/format';
import { statusColor } from '../lib/results';
import { formatLabel, isOpenStatus, STATUS_LABELS, STUDY_STATUSES, uploadShape, type StudyStatus } from '../lib/studies';
import { usePageTitle } from '../lib/usePageTitle';

export const STUDIES_PAGE_SIZE = 10;

const isStudyStatus = (v: string | null): v is StudyStatus => (STUDY_STATUSES as string[]).includes(v ?? '');
const isAsStatus = (v: string | null): v is AsStatus => (Object.values(AsStatus) as string[]).includes(v ?? '');

/** Filters live in the address, like the history's. */
export function studyQueryFromParams(params: URLSearchParams): StudyQuery {
  const page = Math.max(1, Number(params.get('page') ?? '1') || 1);
  const status = params.get('status');
  const as = params.get('as');
  return {
    limit: STUDIES_PAGE_SIZE,
    offset: (page - 1) * STUDIES_PAGE_SIZE,
    status: isStudyStatus(status) ? status : undefined,
    as_status: isAsStatus(as) ? as : undefined,
  };
}

const SHAPE_TEXT = {
  zip: 'One zip archive of a series',
  nifti: 'One NIfTI volume',
  dicom: 'DICOM instances of a series',
  empty: '',
} as const;

function NewStudyForm() {
  const navigate = useNavigate();
  const models = useModels();
  const limits = useLimits().data;
  const create = useCreateStudy();
  const [files, setFiles] = useState<File[]>([]);
  const [dropped, setDropped] = useState(0);
  const [selected, setSelected] = useState<string[] | null>(null);
  const [explain, setExplain] = useState(true);
  const [allowOutOfDomain, setAllowOutOfDomain] = useState(false);
  const [segmenter, setSegmenter] = useState<string | null>(null);
  const maxModels = limits?.max_models_per_request;

  useEffect(() => {
    if (models.data && selected === null) setSelected(defaultSelection(models.data));
  }, [models.data, selected]);

  const keys = selected ?? [];
  const classifiers = models.data?.filter((m) => m.task === 'classification') ?? [];
  const shape = uploadShape(files.map((f) => f.name));
  const tooBig = limits?.job_max_bytes ? files.reduce((s, f) => s + f.size, 0) > limits.job_max_bytes : false;
  const canRun = files.length > 0 && !tooBig && !selectionError(keys, maxModels) && !create.isPending;

  const run = () =>
    create.mutate(
      { files, models: keys, explain, allowOutOfDomain, segmentationModel: segmenter ?? undefined },
      { onSuccess: (study) => navigate(`/studies/${study.id}`, { state: { fresh: true } }) },
    );

  return (
    <Grid gutter="lg" component="section" aria-labelledby="new-study">
      <Grid.Col span={12}>
        <Title order={2} size="h3" id="new-study">
          New study
        </Title>
      </Grid.Col>
      <Grid.Col span={{ base: 12, md: 7 }}>
        <Stack gap="md">
          <Title order={3} size="h4">
            1. Series
          </Title>
          <FilesPicker
            testId="study"
            title="Drop the files of one series here, or click to browse"
            hint="The DICOM instances of a sagittal series, one zip of them, or one NIfTI volume (.nii, .nii.gz). Slices are ordered by their position, not by file name."
            folder
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
              description={SHAPE_TEXT[shape]}
              onClear={() => {
                setFiles([]);
                setDropped(0);
                create.reset();
              }}
              disabled={create.isPending}
            />
          )}
          {tooBig && limits && (
            <Text size="sm" c="red.8" role="alert">
              The files are larger than the server accepts for one study.
            </Text>
          )}
        </Stack>
      </Grid.Col>
      <Grid.Col span={{ base: 12, md: 5 }}>
        <Stack gap="md">
          <Title order={3} size="h4">
            2. Models and options
          </Title>
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
          <SegmenterSelect
            models={models.data}
            value={segmenter}
            onChange={setSegmenter}
            disabled={create.isPending}
            testId="study-segmenter"
          />
          <Checkbox
            label="Heatmaps for the key slices"
            description="Grad-CAM for each model on the slices the study-level answer rests on."
            checked={explain}
            onChange={(e) => setExplain(e.currentTarget.checked)}
            disabled={create.isPending}
            data-testid="study-explain"
          />
          <Checkbox
            label="Show model outputs even for images unlike the training slices"
            description="Out-of-domain series are still flagged; without this their model outputs are withheld."
            checked={allowOutOfDomain}
            onChange={(e) => setAllowOutOfDomain(e.currentTarget.checked)}
            disabled={create.isPending}
            data-testid="study-allow-ood"
          />
          <Button
            size="md"
            leftSection={<IconPlayerPlay size={18} aria-hidden />}
            onClick={run}
            disabled={!canRun}
            loading={create.isPending}
            data-testid="run-study"
          >
            Analyse the series
          </Button>
          {files.length === 0 && !create.isPending && (
            <Text size="xs" c="dimmed">
              Choose the files of a series to enable the analysis.
            </Text>
          )}
          {create.isError && <ErrorAlert error={create.error} onRetry={run} />}
        </Stack>
      </Grid.Col>
    </Grid>
  );
}

function StudyRow({ study }: { study: StudySummary }) {
  const open = isOpenStatus(study.status);
  return (
    <Table.Tr data-testid="study-row">
      <Table.Td>
        <Anchor component={Link} to={`/studies/${study.id}`} fw={600} size="sm">
          {formatLabel(study.format)}
        </Anchor>
        <Text size="xs" c="dimmed">
          {formatDateTime(study.created_at)}
        </Text>
      </Table.Td>
      <Table.Td>
        <RunStatusBadge status={study.status} size="sm" />
      </Table.Td>
      <Table.Td>
        {open ? (
          <StudyProgressBar progress={study.progress} status={study.status} compact />
        ) : (
          <Text size="sm" c="dimmed">
            {study.status === 'done' ? 'Complete' : '—'}
          </Text>
        )}
      </Table.Td>
      <Table.Td>{study.slices || '—'}</Table.Td>
      <Table.Td>
        {study.as_status ? (
          <Group gap={4}>
            <Badge color={statusColor(study.as_status)} variant="light">
              {study.as_status}
              {study.as_confidence != null ? ` · ${formatPercent(study.as_confidence)}` : ''}
            </Badge>
            {study.stage && <Text size="sm">{study.stage}</Text>}
          </Group>
        ) : (
          <Text size="sm" c="dimmed">
            —
          </Text>
        )}
      </Table.Td>
      <Table.Td>
        <DomainFlag inDomain={study.in_domain} />
      </Table.Td>
      <Table.Td>
        <Button component={Link} to={`/studies/${study.id}`} size="compact-sm" variant="light" aria-label={`Open the study of ${formatDateTime(study.created_at)}`}>
          Open
        </Button>
      </Table.Td>
    </Table.Tr>
  );
}

function StudyList() {
  const [params, setParams] = useSearchParams();
  const query = studyQueryFromParams(params);
  const page = Math.floor((query.offset ?? 0) / STUDIES_PAGE_SIZE) + 1;
  const studies = useStudies(query);
  const total = studies.data?.total ?? 0;
  const pages = Math.max(1, Math.ceil(total / STUDIES_PAGE_SIZE));
  const filtered = ['status', 'as'].some((k) => params.get(k));
  const setParam = (name: string, value: string | null) => {
    const next = new URLSearchParams(params);
    if (value) next.set(name, value);
    else next.delete(name);
    if (name !== 'page') next.delete('page');
    setParams(next, { replace: true });
  };

  return (
    <Stack gap="md" component="section" aria-labelledby="your-studies">
      <Title order={2} size="h3" id="your-studies">
        Your studies
      </Title>
      <Paper withBorder p="md" aria-label="Study filters" component="section">
        <SimpleGrid cols={{ base: 1, xs: 2, md: 3 }} spacing="sm">
          <Select
            label="Status"
            placeholder="Any status"
            data={STUDY_STATUSES.map((s) => ({ value: s, label: STATUS_LABELS[s] ?? s }))}
            value={params.get('status')}
            onChange={(v) => setParam('status', v)}
            clearable
            data-testid="studies-filter-status"
          />
          <Select
            label="AS status"
            placeholder="Any AS status"
            data={Object.values(AsStatus).map((v) => ({ value: v, label: capitalize(v) }))}
            value={params.get('as')}
            onChange={(v) => setParam('as', v)}
            clearable
            data-testid="studies-filter-as"
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
      {studies.isError && <ErrorAlert error={studies.error} onRetry={() => void studies.refetch()} />}
      {studies.isPending && (
        <Stack gap="xs" aria-busy="true" aria-label="Loading studies">
          {Array.from({ length: 3 }, (_, i) => (
            <Skeleton key={i} height={56} radius="md" />
          ))}
        </Stack>
      )}
      {studies.data && studies.data.items.length === 0 && (
        <EmptyState icon={<IconStack2 size={28} aria-hidden />} title={filtered ? 'No studies match these filters' : 'No studies yet'}>
          {filtered ? 'Try another status.' : 'Upload a series above; its study appears here.'}
        </EmptyState>
      )}
      {studies.data && studies.data.items.length > 0 && (
        <Paper withBorder>
          <Table.ScrollContainer minWidth={820}>
            <Table verticalSpacing="sm" highlightOnHover data-testid="studies-table" style={{ opacity: studies.isPlaceholderData ? 0.6 : 1 }}>
              <Table.Caption>
                {total} stud{total === 1 ? 'y' : 'ies'}
                {filtered ? ' matching the filters' : ''} · page {page} of {pages}. AS status and stage are the first
                model&apos;s study-level answer.
              </Table.Caption>
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col">Series and date</Table.Th>
                  <Table.Th scope="col">Status</Table.Th>
                  <Table.Th scope="col">Progress</Table.Th>
                  <Table.Th scope="col">Slices</Table.Th>
                  <Table.Th scope="col">AS status and stage</Table.Th>
                  <Table.Th scope="col">Domain</Table.Th>
                  <Table.Th scope="col">
                    <span className="visually-hidden">Actions</span>
                  </Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {studies.data.items.map((s) => (
                  <StudyRow key={s.id} study={s} />
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

export function StudiesPage() {
  usePageTitle('Studies');
  return (
    <>
      <PageHeader
        title="Studies"
        description="Analyse a whole sagittal series: every slice is segmented into one 3D mask, the key slices are classified and explained, and each model gives one study-level answer with its spread."
      />
      <Stack gap="xl">
        <NewStudyForm />
        <ResearchNotice />
        <StudyList />
      </Stack>
    </>
  );
}
