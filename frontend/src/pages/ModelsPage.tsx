import { Badge, Button, Card, Group, SimpleGrid, Stack, Table, Text, Title, VisuallyHidden } from '@mantine/core';
import { IconCpu } from '@tabler/icons-react';
import { Link } from 'react-router-dom';
import type { ModelInfo } from '../client/types.gen';
import { useModels } from '../api/queries';
import { ErrorAlert } from '../components/ErrorAlert';
import { PageHeader } from '../components/PageHeader';
import { ResearchNotice } from '../components/ResearchNotice';
import { CardsSkeleton, EmptyState } from '../components/States';
import { formatCount, formatMetricName, formatPercent } from '../lib/format';
import { crossValidatedHeadline, flattenMetrics, headlineMetric } from '../lib/metrics';
import { provenanceSentence } from '../lib/results';
import { usePageTitle } from '../lib/usePageTitle';

function ModelCardSummary({ model }: { model: ModelInfo }) {
  const metric = headlineMetric(model.task, model.metrics);
  const cv = crossValidatedHeadline(model.task, model.cross_validation);
  const rows = flattenMetrics(model.metrics).slice(0, 6);
  return (
    <Card withBorder padding="md" component="article" aria-label={model.display_name} data-testid={`registry-${model.key}`}>
      <Stack gap="xs" h="100%">
        <div>
          <Title order={3} size="h5">
            {model.display_name}
          </Title>
          <Text size="xs" c="dimmed" ff="monospace">
            {model.key}
          </Text>
        </div>
        <Group gap={4}>
          <Badge variant="light" color={model.task === 'segmentation' ? 'grape' : 'clinical'}>
            {model.task}
          </Badge>
          {model.default && <Badge variant="filled">default</Badge>}
          {model.ready === false && (
            <Badge variant="light" color="yellow" role="status" data-testid={`loading-${model.key}`}>
              loading
              <VisuallyHidden>: still loading in the background, it serves requests once warm</VisuallyHidden>
            </Badge>
          )}
        </Group>
        <Text size="sm">
          {model.architecture} · v{model.version} · {formatCount(model.parameters)} parameters ·{' '}
          {formatCount(model.flops)}FLOPs per image
        </Text>
        {metric && (
          <Text size="sm">
            Measured {metric.label.toLowerCase()}: <strong>{formatPercent(metric.value, 1)}</strong>
          </Text>
        )}
        {cv && (
          <Text size="sm" data-testid={`cv-headline-${model.key}`}>
            Cross-validated {cv.label.toLowerCase()} ({cv.folds} folds): <strong>{formatPercent(cv.value, 1)}</strong>{' '}
            ({formatPercent(cv.low, 1)}–{formatPercent(cv.high, 1)})
          </Text>
        )}
        {rows.length > 0 && (
          <Table verticalSpacing={2} fz="xs" withRowBorders={false}>
            <Table.Tbody>
              {rows.map(([name, value]) => (
                <Table.Tr key={name}>
                  <Table.Td c="dimmed">{formatMetricName(name)}</Table.Td>
                  <Table.Td ta="right">{value <= 1 && value >= 0 ? value.toFixed(3) : formatCount(value)}</Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        )}
        <Text size="xs" c="dimmed">
          {provenanceSentence(model.label_provenance)}
        </Text>
        <Group justify="flex-end" mt="auto">
          <Button component={Link} to={`/models/${encodeURIComponent(model.key)}`} variant="light" size="xs">
            Model card, plots and metrics
          </Button>
        </Group>
      </Stack>
    </Card>
  );
}

export function ModelsPage() {
  usePageTitle('Models');
  const models = useModels();
  const segmenters = models.data?.filter((m) => m.task === 'segmentation') ?? [];
  const classifiers = models.data?.filter((m) => m.task === 'classification') ?? [];
  return (
    <>
      <PageHeader
        title="Model registry"
        description="The models this server has loaded, each from a verified bundle with its measured metrics, label provenance and training record."
      />
      <Stack gap="lg">
        <ResearchNotice detail="The bundled models learn AS status and stage from labels computed by a rule over image features, not from radiologists' diagnoses." />
        {models.isPending && <CardsSkeleton count={2} />}
        {models.isError && <ErrorAlert error={models.error} onRetry={() => void models.refetch()} />}
        {models.data && models.data.length === 0 && (
          <EmptyState icon={<IconCpu size={28} aria-hidden />} title="No models loaded">
            Put model bundles under models/ and restart the server.
          </EmptyState>
        )}
        {[
          { title: 'Classification', items: classifiers },
          { title: 'Segmentation', items: segmenters },
        ].map(
          (group) =>
            group.items.length > 0 && (
              <section key={group.title} aria-label={group.title}>
                <Title order={2} size="h4" mb="sm">
                  {group.title} ({group.items.length})
                </Title>
                <SimpleGrid cols={{ base: 1, sm: 2, lg: 3 }} spacing="md">
                  {group.items.map((m) => (
                    <ModelCardSummary key={m.key} model={m} />
                  ))}
                </SimpleGrid>
              </section>
            ),
        )}
      </Stack>
    </>
  );
}
