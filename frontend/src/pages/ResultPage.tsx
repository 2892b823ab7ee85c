import {
  Badge,
  Button,
  Grid,
  Group,
  Paper,
  Select,
  SimpleGrid,
  Stack,
  Table,
  Text,
  Title,
} from '@mantine/core';
import { notifications } from '@mantine/notifications';
import { IconArrowLeft, IconFileSearch, IconScan, IconTrash } from '@tabler/icons-react';
import { useMemo, useState } from 'react';
import { Link, Navigate, useLocation, useNavigate, useParams } from 'react-router-dom';
import { useArtifactUrl } from '../api/artifacts';
import { ApiError } from '../api/errors';
import { useDeleteResult, useResult } from '../api/queries';
import { ComparisonTable } from '../components/ComparisonTable';
import { ConfirmDelete } from '../components/ConfirmDelete';
import { DomainBanner, WithheldNotice } from '../components/DomainNotice';
import { DownloadMenu, type DownloadItem } from '../components/DownloadMenu';
import { ErrorAlert } from '../components/ErrorAlert';
import { LayerViewer, type LayerDef } from '../components/LayerViewer';
import { ModelResultCard } from '../components/ModelResultCard';
import { PageHeader } from '../components/PageHeader';
import { ResearchNotice } from '../components/ResearchNotice';
import { EmptyState, PageLoader } from '../components/States';
import { formatDateTime, formatPercent } from '../lib/format';
import { explanationFor, provenanceSentence, resultParts, type AnyResult } from '../lib/results';
import { usePageTitle } from '../lib/usePageTitle';

const KIND_LABELS: Record<string, string> = {
  analysis: 'Full analysis',
  segment: 'Segmentation',
  classify: 'Classification',
  explain: 'Explanation',
};

function ResultView({ result }: { result: AnyResult }) {
  const navigate = useNavigate();
  const location = useLocation();
  const fresh = Boolean((location.state as { fresh?: boolean } | null)?.fresh);
  const withheld = Boolean(result.withheld);
  const remove = useDeleteResult();
  const [confirming, setConfirming] = useState(false);
  const { segmentation, classifications, explanations } = resultParts(result);
  const [explanationIndex, setExplanationIndex] = useState(() => {
    const first = classifications[0];
    const preferred = first ? explanationFor(explanations, first.model.key) : null;
    return Math.max(0, preferred ? explanations.indexOf(preferred) : 0);
  });
  const explanation = explanations[explanationIndex] ?? null;

  const base = useArtifactUrl(result.image_url);
  const mask = useArtifactUrl(segmentation?.mask_url);
  const heatmap = useArtifactUrl(explanation?.heatmap_url);
  const focused = useArtifactUrl(explanation?.focused_overlay_url);

  const layers: LayerDef[] = useMemo(
    () => [
      {
        id: 'contour',
        label: 'Segmentation contour',
        kind: 'contour',
        src: mask.url,
        loading: Boolean(segmentation) && !mask.url && mask.isLoading,
        description: segmentation ? `Outline of the structures found by ${segmentation.model.display_name}` : undefined,
      },
      {
        id: 'mask',
        label: 'Segmentation mask',
        kind: 'mask',
        src: mask.url,
        loading: Boolean(segmentation) && !mask.url && mask.isLoading,
        description: 'Filled segmented area',
      },
      {
        id: 'gradcam',
        label: 'Grad-CAM heatmap',
        kind: 'heatmap',
        src: heatmap.url,
        loading: Boolean(explanation) && !heatmap.url && heatmap.isLoading,
        description: explanation
          ? `Where ${explanation.model.display_name} looked for “${explanation.class_label}”`
          : undefined,
      },
      {
        id: 'focused',
        label: 'Focused heatmap',
        kind: 'overlay',
        src: focused.url,
        loading: Boolean(explanation?.focused_overlay_url) && !focused.url && focused.isLoading,
        description: 'Heatmap kept to the lumbosacral region',
      },
      {
        id: 'roi',
        label: 'ROI box',
        kind: 'box',
        box: segmentation?.roi ?? explanation?.roi ?? null,
        description: 'Lumbosacral region of interest',
      },
      {
        id: 'levels',
        label: 'Vertebral levels',
        kind: 'labels',
        labels: (segmentation?.levels ?? []).map((l) => ({ text: l.name, x: l.centroid[0], y: l.centroid[1] })),
        description: 'Each segmented vertebral body named, counted up from L5',
      },
    ],
    [mask.url, mask.isLoading, heatmap.url, heatmap.isLoading, focused.url, focused.isLoading, segmentation, explanation],
  );

  const name = result.image.filename ?? 'slice';
  const stem = name.replace(/\.[^.]+$/, '') || 'slice';
  const downloads: DownloadItem[] = [
    { label: 'Input slice (as the models saw it)', url: result.image_url, filename: `${stem}_input.png` },
  ];
  if (segmentation) {
    downloads.push(
      { label: 'Segmentation mask', url: segmentation.mask_url, filename: `${stem}_mask.png` },
      { label: 'Segmentation overlay', url: segmentation.overlay_url, filename: `${stem}_segmentation.png` },
    );
  }
  for (const e of explanations) {
    downloads.push({
      label: `Grad-CAM overlay — ${e.model.display_name} (${e.head})`,
      url: e.overlay_url,
      filename: `${stem}_gradcam_${e.model.key}_${e.head}.png`,
    });
    if (e.focused_overlay_url) {
      downloads.push({
        label: `Focused overlay — ${e.model.display_name} (${e.head})`,
        url: e.focused_overlay_url,
        filename: `${stem}_focused_${e.model.key}_${e.head}.png`,
      });
    }
  }

  const versions = [
    ...(segmentation ? [segmentation.model] : []),
    ...classifications.map((c) => c.model),
    ...explanations.map((e) => e.model),
  ].filter((m, i, all) => all.findIndex((o) => o.key === m.key) === i);

  const provenance = classifications[0]?.label_provenance ?? segmentation?.label_provenance ?? explanation?.label_provenance;

  const confirmDelete = () =>
    remove.mutate(result.id, {
      onSuccess: () => {
        notifications.show({ color: 'teal', title: 'Deleted', message: `The result for ${name} was deleted.` });
        navigate('/history', { replace: true });
      },
    });

  return (
    <>
      <PageHeader
        title={`Result: ${name}`}
        description={
          <>
            {KIND_LABELS[result.kind ?? 'analysis'] ?? result.kind} · {formatDateTime(result.created_at)} ·{' '}
            {result.image.format.toUpperCase()} {result.image.width}×{result.image.height}
            {result.image.frame != null ? ` · frame ${result.image.frame}` : ''}
          </>
        }
        actions={
          <>
            <Button component={Link} to="/history" variant="subtle" leftSection={<IconArrowLeft size={16} aria-hidden />}>
              History
            </Button>
            <DownloadMenu items={downloads} json={result} jsonName={`${stem}_result_${result.id}.json`} />
            <Button
              variant="light"
              color="red"
              leftSection={<IconTrash size={16} aria-hidden />}
              onClick={() => setConfirming(true)}
            >
              Delete
            </Button>
          </>
        }
      />
      <Stack gap="lg">
        <ResearchNotice detail={`${result.notice} ${provenance ? provenanceSentence(provenance) : ''}`} />
        <DomainBanner domain={result.domain} live={fresh} />
        {withheld && <WithheldNotice />}
        {classifications.length > 1 && (
          <Paper withBorder p="md" component="section" aria-labelledby="side-by-side">
            <Title order={2} size="h4" id="side-by-side" mb="xs">
              Models side by side
            </Title>
            <ComparisonTable classifications={classifications} explanations={explanations} />
          </Paper>
        )}
        <Grid gutter="lg">
          <Grid.Col span={{ base: 12, md: 6 }}>
            <Stack gap="sm">
              <Title order={2} size="h4">
                Image and layers
              </Title>
              {explanations.length > 1 && (
                <Select
                  label="Heatmap of"
                  data={explanations.map((e, i) => ({
                    value: String(i),
                    label: `${e.model.display_name} — ${e.head === 'binary' ? 'AS status' : 'stage'} (${e.method})`,
                  }))}
                  value={String(explanationIndex)}
                  onChange={(value) => value !== null && setExplanationIndex(Number(value))}
                  allowDeselect={false}
                  data-testid="heatmap-select"
                />
              )}
              {base.isError ? (
                <ErrorAlert error={base.error} title="The image could not be loaded" />
              ) : (
                <LayerViewer
                  key={explanationIndex}
                  baseSrc={base.url}
                  baseLoading={base.isLoading}
                  alt={`Preprocessed slice ${name}, 256 by 256 pixels`}
                  layers={layers}
                  defaultVisible={['contour', 'gradcam', 'roi', 'levels']}
                />
              )}
              {segmentation && (
                <Paper withBorder p="sm">
                  <Text size="sm" fw={600} mb={4}>
                    Segmentation — {segmentation.model.display_name} v{segmentation.model.version}
                  </Text>
                  <Text size="sm" c="dimmed">
                    {formatPercent(segmentation.mask_fraction, 1)} of the slice segmented (threshold{' '}
                    {segmentation.threshold}); peak probability {formatPercent(segmentation.probability_max)}.{' '}
                    {segmentation.roi
                      ? `ROI box ${segmentation.roi.x1},${segmentation.roi.y1} – ${segmentation.roi.x2},${segmentation.roi.y2}.`
                      : 'No lumbosacral region was found.'}
                  </Text>
                  {segmentation.levels && segmentation.levels.length > 0 && (
                    <Text size="sm" mt={4} data-testid="levels">
                      Levels found (lowest first): {segmentation.levels.map((l) => l.name).join(', ')}.{' '}
                      <Text span size="xs" c="dimmed">
                        {segmentation.levels_note}
                      </Text>
                    </Text>
                  )}
                </Paper>
              )}
            </Stack>
          </Grid.Col>
          <Grid.Col span={{ base: 12, md: 6 }}>
            <Stack gap="sm">
              <Title order={2} size="h4">
                AS status and stage {classifications.length > 1 ? 'by model' : ''}
              </Title>
              {withheld ? (
                <Text size="sm" c="dimmed" data-testid="withheld-outputs">
                  Withheld for this image (see the notice above).
                </Text>
              ) : classifications.length === 0 ? (
                <EmptyState icon={<IconFileSearch size={28} aria-hidden />} title="No classification in this result">
                  This result holds {KIND_LABELS[result.kind ?? '']?.toLowerCase() ?? 'other'} output only.
                </EmptyState>
              ) : (
                <>
                  <SimpleGrid cols={{ base: 1, sm: classifications.length > 1 ? 2 : 1, md: 1 }} spacing="sm">
                    {classifications.map((c) => (
                      <ModelResultCard
                        key={c.model.key}
                        classification={c}
                        explanation={explanationFor(explanations, c.model.key)}
                      />
                    ))}
                  </SimpleGrid>
                </>
              )}
            </Stack>
          </Grid.Col>
        </Grid>
        <Paper withBorder p="md">
          <Title order={2} size="h5" mb="xs">
            Models and versions
          </Title>
          <Table.ScrollContainer minWidth={480}>
            <Table verticalSpacing={4} data-testid="versions-table">
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col">Model</Table.Th>
                  <Table.Th scope="col">Key</Table.Th>
                  <Table.Th scope="col">Version</Table.Th>
                  <Table.Th scope="col">Architecture</Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {versions.map((m) => (
                  <Table.Tr key={m.key}>
                    <Table.Td>
                      <Link to={`/models/${encodeURIComponent(m.key)}`}>{m.display_name}</Link>
                    </Table.Td>
                    <Table.Td>
                      <Text size="sm" ff="monospace">
                        {m.key}
                      </Text>
                    </Table.Td>
                    <Table.Td>
                      <Badge variant="light" color="gray" tt="none">
                        v{m.version}
                      </Badge>
                    </Table.Td>
                    <Table.Td>{m.architecture}</Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          </Table.ScrollContainer>
          {Object.keys(result.timings_ms ?? {}).length > 0 && (
            <Text size="xs" c="dimmed" mt="xs">
              Timings:{' '}
              {Object.entries(result.timings_ms ?? {})
                .map(([step, ms]) => `${step} ${ms.toFixed(0)} ms`)
                .join(' · ')}
            </Text>
          )}
        </Paper>
      </Stack>
      <ConfirmDelete
        opened={confirming}
        title="Delete this result?"
        loading={remove.isPending}
        error={remove.error}
        onConfirm={confirmDelete}
        onClose={() => {
          setConfirming(false);
          remove.reset();
        }}
      >
        The result for <strong>{name}</strong>, its uploaded image and all its overlays will be
        removed permanently.
      </ConfirmDelete>
    </>
  );
}

export function ResultPage() {
  const { id = '' } = useParams();
  usePageTitle('Result');
  const result = useResult(id);
  if (result.isPending) return <PageLoader label="Loading the result…" />;
  if (result.isError) {
    const missing = result.error instanceof ApiError && [404, 403, 422].includes(result.error.status);
    return missing ? (
      <EmptyState
        icon={<IconFileSearch size={28} aria-hidden />}
        title="Result not found"
        action={
          <Group>
            <Button component={Link} to="/history" variant="default">
              Open history
            </Button>
            <Button component={Link} to="/analyze" leftSection={<IconScan size={16} aria-hidden />}>
              New analysis
            </Button>
          </Group>
        }
      >
        This result does not exist, was deleted, or belongs to another account.
      </EmptyState>
    ) : (
      <ErrorAlert error={result.error} onRetry={() => void result.refetch()} />
    );
  }
  // A whole-series study has its own page.
  if (result.data.kind === 'study') return <Navigate to={`/studies/${id}`} replace />;
  return <ResultView result={result.data as AnyResult} />;
}
