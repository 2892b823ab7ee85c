import { Badge, Button, Code, Grid, Group, Paper, SimpleGrid, Spoiler, Stack, Table, Text, Title } from '@mantine/core';
import { IconArrowLeft, IconCpu } from '@tabler/icons-react';
import { Link, useParams } from 'react-router-dom';
import { ApiError } from '../api/errors';
import { useModelCard } from '../api/queries';
import { AuthImage } from '../components/AuthImage';
import { ErrorAlert } from '../components/ErrorAlert';
import {
  CalibrationSection,
  CrossValidationSection,
  ExplanationSection,
  isReliabilityPlot,
} from '../components/ModelQuality';
import { PageHeader } from '../components/PageHeader';
import { ResearchNotice } from '../components/ResearchNotice';
import { EmptyState, PageLoader } from '../components/States';
import { formatCount, formatMetricName } from '../lib/format';
import { flattenMetrics } from '../lib/metrics';
import { methodLabel } from '../lib/methods';
import { provenanceSentence } from '../lib/results';
import { usePageTitle } from '../lib/usePageTitle';

function KeyValues({ data, label }: { data: Record<string, unknown>; label: string }) {
  const rows = Object.entries(data).filter(([, v]) => v !== null && v !== undefined && typeof v !== 'object');
  if (rows.length === 0) return null;
  return (
    <Table verticalSpacing={4} fz="sm" aria-label={label}>
      <Table.Tbody>
        {rows.map(([k, v]) => (
          <Table.Tr key={k}>
            <Table.Th scope="row" fw={500} c="dimmed" w="45%">
              {formatMetricName(k)}
            </Table.Th>
            <Table.Td style={{ overflowWrap: 'anywhere' }}>{String(v)}</Table.Td>
          </Table.Tr>
        ))}
      </Table.Tbody>
    </Table>
  );
}

function plotTitle(name: string): string {
  return formatMetricName(name.replace(/\.(png|jpe?g|svg)$/i, ''));
}

export function ModelDetailPage() {
  const { key = '' } = useParams();
  const card = useModelCard(key);
  usePageTitle(card.data?.display_name ?? 'Model');

  if (card.isPending) return <PageLoader label="Loading the model card…" />;
  if (card.isError) {
    return card.error instanceof ApiError && card.error.status === 404 ? (
      <EmptyState
        icon={<IconCpu size={28} aria-hidden />}
        title="Model not found"
        action={
          <Button component={Link} to="/models">
            All models
          </Button>
        }
      >
        No model with the key “{key}” is loaded.
      </EmptyState>
    ) : (
      <ErrorAlert error={card.error} onRetry={() => void card.refetch()} />
    );
  }
  const m = card.data;
  const metrics = flattenMetrics(m.metrics, '', 4);
  const allPlots = m.plots ?? [];
  // Reliability diagrams sit with the calibration numbers they illustrate.
  const plots = m.calibration ? allPlots.filter((p) => !isReliabilityPlot(p)) : allPlots;
  return (
    <>
      <PageHeader
        title={m.display_name}
        description={
          <>
            <Text span ff="monospace" size="sm">
              {m.key}
            </Text>{' '}
            · {m.task} · {m.architecture} · version {m.version}
            {m.created ? ` · created ${m.created}` : ''}
          </>
        }
        actions={
          <Button component={Link} to="/models" variant="subtle" leftSection={<IconArrowLeft size={16} aria-hidden />}>
            All models
          </Button>
        }
      />
      <Stack gap="lg">
        <ResearchNotice detail={`${m.intended_use || 'Research use only.'} ${provenanceSentence(m.label_provenance)}`} />
        <Grid gutter="lg">
          <Grid.Col span={{ base: 12, md: 5 }}>
            <Stack gap="md">
              <Paper withBorder p="md">
                <Title order={2} size="h5" mb="xs">
                  Size
                </Title>
                <Group gap="xs">
                  <Badge variant="light" tt="none">{formatCount(m.parameters)} parameters</Badge>
                  <Badge variant="light" tt="none">{formatCount(m.flops)}FLOPs / image</Badge>
                  <Badge variant="light" color="gray" tt="none">
                    input {m.input_shape.join('×')}
                  </Badge>
                  {m.default && <Badge tt="none">default for {m.task}</Badge>}
                </Group>
              </Paper>
              <Paper withBorder p="md">
                <Title order={2} size="h5" mb="xs">
                  Measured metrics
                </Title>
                {metrics.length === 0 ? (
                  <Text size="sm" c="dimmed">
                    This bundle records no metrics.
                  </Text>
                ) : (
                  <Table verticalSpacing={4} fz="sm" striped data-testid="metrics-table">
                    <Table.Tbody>
                      {metrics.map(([name, value]) => (
                        <Table.Tr key={name}>
                          <Table.Th scope="row" fw={500}>
                            {formatMetricName(name)}
                          </Table.Th>
                          <Table.Td ta="right">
                            {Number.isInteger(value) ? formatCount(value) : value.toFixed(4)}
                          </Table.Td>
                        </Table.Tr>
                      ))}
                    </Table.Tbody>
                  </Table>
                )}
              </Paper>
              <Paper withBorder p="md">
                <Title order={2} size="h5" mb="xs">
                  Training and data
                </Title>
                <KeyValues data={m.training ?? {}} label="Training" />
                <KeyValues data={m.dataset ?? {}} label="Dataset" />
                <KeyValues data={m.weights ?? {}} label="Weights" />
                {m.gradcam_layer && (
                  <Text size="sm" mt="xs">
                    Grad-CAM layer: <Code>{m.gradcam_layer}</Code>
                  </Text>
                )}
                {m.default_method && (
                  <Text size="sm" mt="xs" data-testid="default-method-line">
                    Default explanation method: <strong>{methodLabel(m.default_method)}</strong>
                  </Text>
                )}
              </Paper>
            </Stack>
          </Grid.Col>
          <Grid.Col span={{ base: 12, md: 7 }}>
            <Stack gap="md">
              {m.cross_validation && <CrossValidationSection cv={m.cross_validation} single={m.metrics ?? {}} />}
              {m.explanation && <ExplanationSection benchmark={m.explanation} />}
              {m.calibration && <CalibrationSection calibration={m.calibration} plots={allPlots} />}
              <Paper withBorder p="md">
                <Title order={2} size="h5" mb="sm">
                  Confusion matrices and curves
                </Title>
                {plots.length === 0 ? (
                  <Text size="sm" c="dimmed">
                    {allPlots.length > 0 ? 'This bundle has no other plots.' : 'This bundle has no plots.'}
                  </Text>
                ) : (
                  <SimpleGrid cols={{ base: 1, sm: 2 }} spacing="md">
                    {plots.map((plot) => (
                      <figure key={plot.url} style={{ margin: 0 }}>
                        <AuthImage url={plot.url} alt={plotTitle(plot.name)} height={240} width="100%" bg="white" />
                        <Text component="figcaption" size="xs" c="dimmed" ta="center" mt={4}>
                          {plotTitle(plot.name)}
                        </Text>
                      </figure>
                    ))}
                  </SimpleGrid>
                )}
              </Paper>
              {m.readme && (
                <Paper withBorder p="md">
                  <Title order={2} size="h5" mb="xs">
                    Model card
                  </Title>
                  <Spoiler maxHeight={320} showLabel="Show the whole card" hideLabel="Show less">
                    <Text size="sm" style={{ whiteSpace: 'pre-wrap' }} ff="monospace">
                      {m.readme}
                    </Text>
                  </Spoiler>
                </Paper>
              )}
            </Stack>
          </Grid.Col>
        </Grid>
      </Stack>
    </>
  );
}
