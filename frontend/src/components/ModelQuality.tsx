import { Badge, Group, Paper, SimpleGrid, Stack, Table, Text, Title } from '@mantine/core';
import { useId } from 'react';
import type {
  Calibration,
  CamMethod,
  ExplanationBenchmark,
  HeadCalibration,
  MethodFaithfulness,
  PlotLink,
} from '../client/types.gen';
import { methodLabel } from '../lib/methods';
import { AuthImage } from './AuthImage';

function num(value: number, digits = 3): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '—';
}

/** A mean with its 95% interval, e.g. "0.412 (0.380–0.447)". */
function withInterval(value: number, ci: [number, number]): string {
  return `${num(value)} (${num(ci[0])}–${num(ci[1])})`;
}

/** The per-method faithfulness benchmark behind the default explanation method. */
export function ExplanationSection({ benchmark }: { benchmark: ExplanationBenchmark }) {
  const titleId = useId();
  const rows = (Object.entries(benchmark.measured) as [CamMethod, MethodFaithfulness | undefined][])
    .filter((entry): entry is [CamMethod, MethodFaithfulness] => Boolean(entry[1]))
    .sort((a, b) => b[1].score - a[1].score);
  const chosen = benchmark.default_method;
  return (
    <Paper withBorder p="md" component="section" aria-labelledby={titleId} data-testid="explanation-section">
      <Title order={2} size="h5" mb="xs" id={titleId}>
        Explanation methods
      </Title>
      <Text size="sm" mb="sm">
        A higher faithfulness score means that removing the pixels a method highlights lowers the model&apos;s
        confidence faster than removing random pixels does. The default method,{' '}
        <strong>{methodLabel(chosen)}</strong>, is the one with the best measured score ({benchmark.criterion ?? 'highest mean faithfulness score'}).
      </Text>
      <Table.ScrollContainer minWidth={520}>
        <Table verticalSpacing={4} fz="sm" striped data-testid="explanation-table">
          <Table.Caption>
            Measured on {benchmark.slices.length} slices from {benchmark.subjects} subjects of the {benchmark.split}{' '}
            split; {benchmark.steps} deletion steps, {benchmark.n_random} random orderings
            {benchmark.baseline ? `, ${benchmark.baseline} baseline` : ''}. Intervals:{' '}
            {benchmark.ci ?? '95% bootstrap'}.
          </Table.Caption>
          <Table.Thead>
            <Table.Tr>
              <Table.Th scope="col">Method</Table.Th>
              <Table.Th scope="col">Score (higher is better)</Table.Th>
              <Table.Th scope="col">Deletion AUC (lower is better)</Table.Th>
              <Table.Th scope="col">Insertion AUC (higher is better)</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {rows.map(([method, f]) => (
              <Table.Tr key={method} data-testid={`explanation-row-${method}`}>
                <Table.Th scope="row" fw={500}>
                  <Group gap={6} wrap="nowrap">
                    {methodLabel(method)}
                    {method === chosen && (
                      <Badge size="xs" variant="light" tt="none" data-testid="default-method">
                        default
                      </Badge>
                    )}
                  </Group>
                </Table.Th>
                <Table.Td>{withInterval(f.score, f.score_ci)}</Table.Td>
                <Table.Td>{withInterval(f.deletion_auc, f.deletion_auc_ci)}</Table.Td>
                <Table.Td>{withInterval(f.insertion_auc, f.insertion_auc_ci)}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Table.ScrollContainer>
    </Paper>
  );
}

const HEADS: { key: 'binary' | 'stage'; label: string }[] = [
  { key: 'binary', label: 'AS status' },
  { key: 'stage', label: 'Stage' },
];

export function isReliabilityPlot(plot: PlotLink): boolean {
  return /^reliability_(binary|stage)\.(png|jpe?g|svg)$/i.test(plot.name);
}

/** Temperature scaling per head, with the reliability diagrams when the bundle has them. */
export function CalibrationSection({ calibration, plots }: { calibration: Calibration; plots: PlotLink[] }) {
  const titleId = useId();
  const diagrams = HEADS.map((head) => ({
    head,
    plot: plots.find((p) => p.name.toLowerCase().startsWith(`reliability_${head.key}.`)),
  })).filter((d): d is { head: (typeof HEADS)[number]; plot: PlotLink } => Boolean(d.plot));
  return (
    <Paper withBorder p="md" component="section" aria-labelledby={titleId} data-testid="calibration-section">
      <Title order={2} size="h5" mb="xs" id={titleId}>
        Calibration
      </Title>
      <Text size="sm" mb="sm">
        Serving divides each head&apos;s log-probabilities by its fitted temperature, so the probabilities shown
        match how often the model is right; this never changes the predicted class.
      </Text>
      <Stack gap="md">
        <Table.ScrollContainer minWidth={480}>
          <Table verticalSpacing={4} fz="sm" striped data-testid="calibration-table">
            <Table.Caption>
              Temperature fitted on {calibration.fitted_on} ({calibration.n_fit} images); errors measured on{' '}
              {calibration.evaluated_on ?? 'test'} ({calibration.n_eval} images)
              {calibration.bins ? `, expected calibration error over ${calibration.bins} bins` : ''}.
            </Table.Caption>
            <Table.Thead>
              <Table.Tr>
                <Table.Th scope="col">Head</Table.Th>
                <Table.Th scope="col">Temperature</Table.Th>
                <Table.Th scope="col">ECE before → after</Table.Th>
                <Table.Th scope="col">NLL before → after</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {HEADS.map(({ key, label }) => {
                const h: HeadCalibration = calibration[key];
                return (
                  <Table.Tr key={key} data-testid={`calibration-row-${key}`}>
                    <Table.Th scope="row" fw={500}>
                      {label}
                    </Table.Th>
                    <Table.Td>{num(h.temperature, 2)}</Table.Td>
                    <Table.Td>
                      {num(h.ece_before)} → {num(h.ece_after)}
                    </Table.Td>
                    <Table.Td>
                      {num(h.nll_before)} → {num(h.nll_after)}
                    </Table.Td>
                  </Table.Tr>
                );
              })}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
        {diagrams.length > 0 && (
          <SimpleGrid cols={{ base: 1, sm: 2 }} spacing="md">
            {diagrams.map(({ head, plot }) => (
              <figure key={plot.url} style={{ margin: 0 }}>
                <AuthImage
                  url={plot.url}
                  alt={`Reliability diagram, ${head.label}: accuracy against confidence, before and after temperature scaling`}
                  height={240}
                  width="100%"
                  bg="white"
                />
                <Text component="figcaption" size="xs" c="dimmed" ta="center" mt={4}>
                  Reliability, {head.label.toLowerCase()}
                </Text>
              </figure>
            ))}
          </SimpleGrid>
        )}
      </Stack>
    </Paper>
  );
}
