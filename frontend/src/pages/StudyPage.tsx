import {
  Alert,
  Badge,
  Button,
  Divider,
  Grid,
  Group,
  List,
  Paper,
  SimpleGrid,
  Stack,
  Table,
  Text,
  Title,
} from '@mantine/core';
import { notifications } from '@mantine/notifications';
import {
  IconAlertTriangle,
  IconArrowLeft,
  IconBan,
  IconFileSearch,
  IconPlayerStop,
  IconStack2,
  IconTrash,
} from '@tabler/icons-react';
import { useState } from 'react';
import { Link, useLocation, useNavigate, useParams } from 'react-router-dom';
import { ApiError } from '../api/errors';
import { useCancelStudy, useDeleteStudy, useStudy } from '../api/queries';
import type { StudyModelResult, StudyPublic, StudyResult } from '../client/types.gen';
import { ConfirmDelete } from '../components/ConfirmDelete';
import { DomainBanner, WithheldNotice } from '../components/DomainNotice';
import { DownloadButton } from '../components/DownloadButton';
import { ErrorAlert } from '../components/ErrorAlert';
import { PageHeader } from '../components/PageHeader';
import { ProbabilityBars } from '../components/ProbabilityBars';
import { ResearchNotice } from '../components/ResearchNotice';
import { RunStatusBadge, StudyProgressBar } from '../components/RunStatus';
import { SeriesChart } from '../components/SeriesChart';
import { SliceViewer } from '../components/SliceViewer';
import { EmptyState, PageLoader } from '../components/States';
import { formatDateTime, formatPercent } from '../lib/format';
import { orderedProbabilities, STAGE_ORDER, STATUS_ORDER, statusColor } from '../lib/results';
import {
  downloadName,
  formatLabel,
  geometrySentence,
  initialSlice,
  isOpenStatus,
  isRuleLabelled,
  provenanceShort,
  readStudyInput,
} from '../lib/studies';
import { usePageTitle } from '../lib/usePageTitle';

function StudyModelCard({ m }: { m: StudyModelResult }) {
  return (
    <Paper withBorder p="md" component="article" aria-label={`Study result of ${m.model.display_name}`} data-testid={`study-model-${m.model.key}`}>
      <Stack gap="xs">
        <div>
          <Title order={3} size="h5">
            {m.model.display_name}
          </Title>
          <Text size="xs" c="dimmed">
            {m.model.key} · version {m.model.version} · {m.model.architecture}
          </Text>
        </div>
        <Group gap="xs">
          <Badge size="lg" color={statusColor(m.as_status)} variant="light" data-testid="study-as-status">
            AS {m.as_status}
          </Badge>
          <Badge size="lg" color="clinical" variant="outline">
            Stage: {m.stage}
          </Badge>
        </Group>
        <Text size="sm">
          AS status <strong>{m.as_status}</strong> with probability {formatPercent(m.as_probability, 1)}; stage{' '}
          <strong>{m.stage}</strong> with probability {formatPercent(m.stage_probability, 1)}.
        </Text>
        <Text size="sm">
          P(AS positive) over the key slices: mean {formatPercent(m.p_positive_mean, 1)}, highest{' '}
          {formatPercent(m.p_positive_max, 1)}.
        </Text>
        <Text size="sm" data-testid="study-agreement">
          Over {m.slices} key slice{m.slices === 1 ? '' : 's'}, {formatPercent(m.status_agreement)} agree on the AS status and{' '}
          {formatPercent(m.stage_agreement)} on the stage.
        </Text>
        <Divider label="AS status" labelPosition="left" />
        <ProbabilityBars
          items={orderedProbabilities(m.as_probabilities, STATUS_ORDER)}
          highlight={m.as_status}
          color={statusColor(m.as_status)}
          label={`Study-level AS status probabilities from ${m.model.display_name}`}
        />
        <Divider label="Stage" labelPosition="left" />
        <ProbabilityBars
          items={orderedProbabilities(m.stage_probabilities, STAGE_ORDER)}
          highlight={m.stage}
          label={`Study-level stage probabilities from ${m.model.display_name}`}
        />
        <Text size="xs" c={isRuleLabelled(m.label_provenance) ? undefined : 'dimmed'} fw={isRuleLabelled(m.label_provenance) ? 600 : 400} data-testid="study-provenance">
          {provenanceShort(m.label_provenance)}
          {m.label_provenance.description ? ` — ${m.label_provenance.description.replace(/\.\s*$/, '')}.` : '.'}
        </Text>
      </Stack>
    </Paper>
  );
}

function InputSummary({ study, result }: { study: StudyPublic; result: StudyResult | null }) {
  const input = readStudyInput((result?.input ?? study.input) as Record<string, unknown>);
  return (
    <Paper withBorder p="md" component="section" aria-labelledby="study-input" data-testid="study-input">
      <Title order={2} size="h4" id="study-input" mb="xs">
        Input
      </Title>
      <SimpleGrid cols={{ base: 1, sm: 2 }} spacing={4}>
        <Text size="sm">
          <strong>Format:</strong> {formatLabel(input.format ?? study.format)}
          {input.modality ? ` (${input.modality})` : ''}
        </Text>
        <Text size="sm">
          <strong>Slices:</strong> {input.slices ?? study.slices}
          {input.files !== null ? ` from ${input.files} file${input.files === 1 ? '' : 's'}` : ''}
        </Text>
        <Text size="sm">
          <strong>Geometry:</strong> {geometrySentence(input)}
        </Text>
      </SimpleGrid>
      {input.skipped.length > 0 && (
        <>
          <Text size="sm" fw={600} mt="sm">
            Skipped files ({input.skipped.length})
          </Text>
          <Table.ScrollContainer minWidth={420}>
            <Table verticalSpacing={2} fz="sm" data-testid="skipped-files">
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col">File</Table.Th>
                  <Table.Th scope="col">Code</Table.Th>
                  <Table.Th scope="col">Reason</Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {input.skipped.map((s, i) => (
                  <Table.Tr key={`${s.name}-${i}`}>
                    <Table.Td>{s.name}</Table.Td>
                    <Table.Td>
                      <Text span size="sm" ff="monospace">
                        {s.code}
                      </Text>
                    </Table.Td>
                    <Table.Td>{s.reason}</Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          </Table.ScrollContainer>
        </>
      )}
      {input.duplicates.length > 0 && (
        <Text size="sm" mt="sm">
          <strong>Duplicates left out ({input.duplicates.length}):</strong> {input.duplicates.slice(0, 10).join(', ')}
          {input.duplicates.length > 10 ? ' …' : ''}
        </Text>
      )}
      {input.otherSeries.length > 0 && (
        <>
          <Text size="sm" fw={600} mt="sm">
            Other series in the upload, not analysed
          </Text>
          <List size="sm">
            {input.otherSeries.map((s) => (
              <List.Item key={s.series_uid}>
                <Text span size="sm" ff="monospace">
                  {s.series_uid}
                </Text>
                {s.slices !== null ? ` · ${s.slices} slices` : ''}
                {s.sagittal === false ? ' · not sagittal' : ''}
              </List.Item>
            ))}
          </List>
        </>
      )}
    </Paper>
  );
}

function noOutputReason(study: StudyPublic, result: StudyResult): string {
  if (result.withheld) return 'Model outputs were withheld: the series is unlike the training slices.';
  if ((result.segmentation?.key_slices ?? []).length === 0) {
    return 'No slice was classified: the segmenter found no key slices in this series.';
  }
  if (!study.options.explain) return 'Heatmaps were not requested for this study.';
  return 'No slice of this study was classified.';
}

function DoneStudy({ study, result }: { study: StudyPublic; result: StudyResult }) {
  const keySlices = result.segmentation?.key_slices ?? result.slices.filter((s) => s.key).map((s) => s.index);
  const keyPositions = result.slices.map((s, i) => (keySlices.includes(s.index) ? i : -1)).filter((i) => i >= 0);
  const [index, setIndex] = useState(() => initialSlice(result.slices.length, keyPositions));
  const names: Record<string, string> = {};
  for (const m of result.models) names[m.model.key] = m.model.display_name;
  const reason = noOutputReason(study, result);
  const noHeat = result.withheld
    ? 'Outputs withheld: no heatmaps'
    : keyPositions.length === 0
      ? 'No key slices, so no heatmaps'
      : !study.options.explain
        ? 'Heatmaps were not requested'
        : undefined;

  return (
    <Stack gap="lg">
      <DomainBanner domain={result.domain} subject="study" />
      {result.withheld && <WithheldNotice subject="study" />}
      {result.slices.length === 0 ? (
        <EmptyState icon={<IconStack2 size={28} aria-hidden />} title="No slices">
          This study holds no readable slices.
        </EmptyState>
      ) : (
        <Grid gutter="lg">
          <Grid.Col span={{ base: 12, md: 6 }}>
            <Paper withBorder p="md" component="section" aria-labelledby="study-viewer">
              <Title order={2} size="h4" id="study-viewer" mb="xs">
                Slices
              </Title>
              <SliceViewer slices={result.slices} index={index} onIndexChange={setIndex} names={names} noHeatmapReason={noHeat} />
            </Paper>
          </Grid.Col>
          <Grid.Col span={{ base: 12, md: 6 }}>
            <Stack gap="md" component="section" aria-labelledby="study-level">
              <Title order={2} size="h4" id="study-level">
                Study-level result
              </Title>
              {result.models.length > 0 ? (
                result.models.map((m) => <StudyModelCard key={m.model.key} m={m} />)
              ) : (
                <Text size="sm" c="dimmed" data-testid="study-no-models">
                  {reason}
                </Text>
              )}
              {result.segmentation && (
                <Paper withBorder p="md" data-testid="study-segmentation">
                  <Title order={3} size="h5" mb={4}>
                    Segmentation — {result.segmentation.model.display_name} v{result.segmentation.model.version}
                  </Title>
                  <Text size="sm">
                    {result.segmentation.voxels.toLocaleString()} voxels, {result.segmentation.volume_ml.toFixed(1)} ml segmented.{' '}
                    {keySlices.length > 0
                      ? `Key slices: ${keyPositions.map((i) => i + 1).join(', ')}.`
                      : 'No key slices were found.'}
                  </Text>
                  <Text size="xs" c="dimmed" mt={4}>
                    {result.segmentation.key_slice_rule}
                  </Text>
                </Paper>
              )}
            </Stack>
          </Grid.Col>
        </Grid>
      )}
      <Paper withBorder p="md" component="section" aria-labelledby="study-chart">
        <Title order={2} size="h4" id="study-chart" mb="xs">
          P(AS positive) along the series
        </Title>
        <SeriesChart
          slices={result.slices}
          keySlices={keyPositions}
          current={index}
          onSelect={setIndex}
          names={names}
          emptyReason={reason}
        />
      </Paper>
      <InputSummary study={study} result={result} />
    </Stack>
  );
}

function StudyView({ study }: { study: StudyPublic }) {
  const navigate = useNavigate();
  const location = useLocation();
  const cancel = useCancelStudy();
  const remove = useDeleteStudy();
  const [confirming, setConfirming] = useState(false);
  const open = isOpenStatus(study.status);
  const result = study.result ?? null;
  const input = readStudyInput(study.input);
  const fresh = Boolean((location.state as { fresh?: boolean } | null)?.fresh);

  const confirmDelete = () =>
    remove.mutate(study.id, {
      onSuccess: () => {
        notifications.show({ color: 'teal', title: 'Deleted', message: 'The study and its files were deleted.' });
        navigate('/studies', { replace: true });
      },
    });

  return (
    <>
      <PageHeader
        title={`Study: ${formatLabel(study.format ?? input.format)}${study.slices ? `, ${study.slices} slices` : ''}`}
        description={
          <>
            Submitted {formatDateTime(study.created_at)}
            {study.finished_at ? ` · finished ${formatDateTime(study.finished_at)}` : ''} · models{' '}
            {study.options.models.join(', ') || 'default'}
          </>
        }
        actions={
          <>
            <Button component={Link} to="/studies" variant="subtle" leftSection={<IconArrowLeft size={16} aria-hidden />}>
              Studies
            </Button>
            {study.mask_url && (
              <DownloadButton url={study.mask_url} filename={downloadName('study', study.id, 'mask')} accept="application/gzip,*/*" data-testid="download-mask">
                Mask (NIfTI)
              </DownloadButton>
            )}
            {study.status === 'done' && study.format !== 'nifti' && (
              <DownloadButton url={`/studies/${study.id}/dicom`} filename={downloadName('study', study.id, 'dicom')} accept="application/zip" data-testid="download-dicom">
                DICOM (SEG, SR, maps)
              </DownloadButton>
            )}
            {study.status === 'done' && (
              <DownloadButton url={`/studies/${study.id}/fhir`} filename={downloadName('study', study.id, 'fhir')} accept="application/fhir+json" data-testid="download-fhir">
                FHIR report
              </DownloadButton>
            )}
            {!open && (
              <DownloadButton url={`/studies/${study.id}`} filename={downloadName('study', study.id, 'json')} accept="application/json" fresh data-testid="download-study-json">
                Study (JSON)
              </DownloadButton>
            )}
            {open && (
              <Button
                variant="light"
                color="orange"
                leftSection={<IconPlayerStop size={16} aria-hidden />}
                onClick={() => cancel.mutate(study.id)}
                loading={cancel.isPending}
                data-testid="cancel-study"
              >
                Cancel
              </Button>
            )}
            <Button variant="light" color="red" leftSection={<IconTrash size={16} aria-hidden />} onClick={() => setConfirming(true)}>
              Delete
            </Button>
          </>
        }
      />
      <Stack gap="lg">
        <Group gap="xs">
          <RunStatusBadge status={study.status} size="lg" />
          {study.push && (
            <Badge
              variant="light"
              color={study.push.status === 'done' ? 'teal' : study.push.status === 'failed' ? 'red' : 'gray'}
              tt="none"
              title={study.push.message ?? undefined}
              data-testid="study-push"
            >
              {study.push.status === 'done'
                ? `results sent to the PACS (${study.push.objects?.length ?? 0} objects)`
                : study.push.status === 'failed'
                  ? `sending to the PACS failed${study.push.message ? `: ${study.push.message}` : ''}`
                  : 'results will be sent to the PACS'}
            </Badge>
          )}
          {study.options.allow_out_of_domain && (
            <Badge variant="outline" color="gray" tt="none">
              outputs shown even out of domain
            </Badge>
          )}
        </Group>
        <ResearchNotice detail={study.notice} />
        {cancel.isError && <ErrorAlert error={cancel.error} title="The study could not be cancelled" />}
        {open && (
          <Paper withBorder p="md" component="section" aria-label="Progress" data-testid="study-running">
            <StudyProgressBar progress={study.progress} status={study.status} />
            <Text size="xs" c="dimmed" mt="xs" aria-live="polite">
              {study.status === 'queued'
                ? 'Waiting for a worker. This page updates by itself.'
                : 'Analysing the series. This page updates by itself; you can leave it and come back.'}
            </Text>
          </Paper>
        )}
        {study.status === 'failed' && (
          <Alert
            color="red"
            variant="light"
            icon={<IconAlertTriangle size={20} aria-hidden />}
            title="The study could not be analysed"
            role={fresh ? 'alert' : 'note'}
            data-testid="study-failed"
          >
            <Text size="sm">{study.error?.message ?? 'The analysis failed.'}</Text>
            {study.error?.code && (
              <Text size="xs" mt={4}>
                Error code:{' '}
                <Text span ff="monospace" size="xs">
                  {study.error.code}
                </Text>
              </Text>
            )}
          </Alert>
        )}
        {study.status === 'cancelled' && (
          <Alert color="gray" variant="light" icon={<IconBan size={20} aria-hidden />} title="Cancelled" role="note" data-testid="study-cancelled">
            This study was cancelled before it finished; nothing of it was stored but its input summary.
          </Alert>
        )}
        {study.status === 'done' && result && <DoneStudy study={study} result={result} />}
        {(!result || study.status !== 'done') && <InputSummary study={study} result={null} />}
      </Stack>
      <ConfirmDelete
        opened={confirming}
        title="Delete this study?"
        loading={remove.isPending}
        error={remove.error}
        onConfirm={confirmDelete}
        onClose={() => {
          setConfirming(false);
          remove.reset();
        }}
      >
        The study, its uploaded series, its 3D mask and every slice image and heatmap will be removed permanently
        {open ? '; it is cancelled first' : ''}.
      </ConfirmDelete>
    </>
  );
}

export function StudyPage() {
  const { id = '' } = useParams();
  usePageTitle('Study');
  const study = useStudy(id);
  if (study.isPending) return <PageLoader label="Loading the study…" />;
  if (study.isError) {
    const missing = study.error instanceof ApiError && [404, 403, 422].includes(study.error.status);
    return missing ? (
      <EmptyState
        icon={<IconFileSearch size={28} aria-hidden />}
        title="Study not found"
        action={
          <Button component={Link} to="/studies" variant="default">
            Open studies
          </Button>
        }
      >
        This study does not exist, was deleted, or belongs to another account.
      </EmptyState>
    ) : (
      <ErrorAlert error={study.error} onRetry={() => void study.refetch()} />
    );
  }
  return <StudyView study={study.data} />;
}
