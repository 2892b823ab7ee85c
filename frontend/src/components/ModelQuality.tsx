import { Badge, Group, Paper, SimpleGrid, Stack, Table, Text, Title } from '@mantine/core';
import { useId } from 'react';
import type {
  Calibration,
  CamMethod,
  CrossValidation,
  ExplanationBenchmark,
  HeadCalibration,
  Metrics,
  MethodFaithfulness,
  PlotLink,
} from '../client/types.gen';
import { formatMetricName, formatPercent } from '../lib/format';
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

/** Accuracies as percentages, the other metrics (IoU, Dice, F1, recall) as fractions. */
function metricValue(name: string, value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  return name.endsWith('accuracy') ? formatPercent(value, 1) : num(value);
}

/**
 * Where the single split's value and the cross-validated interval sit on the metric's 0–1 scale
 * (decorative: the cells beside it give the same numbers).
 */
function IntervalStrip({ single, pooled, ci }: { single: number | null; pooled: number; ci: [number, number] }) {
  const x = (v: number) => 4 + Math.min(1, Math.max(0, v)) * 112;
  return (
    <svg width={120} height={18} aria-hidden="true" focusable="false" data-testid="cv-strip">
      <line x1={x(0)} x2={x(1)} y1={9} y2={9} stroke="var(--mantine-color-gray-4)" />
      <rect x={x(ci[0])} y={4} width={Math.max(1, x(ci[1]) - x(ci[0]))} height={10} rx={2} fill="var(--mantine-color-blue-2)" />
      <circle cx={x(pooled)} cy={9} r={3} fill="var(--mantine-color-blue-8)" />
      {single !== null && (
        <path d={`M ${x(single)} 2 l 3 7 l -3 7 l -3 -7 z`} fill="var(--mantine-color-orange-7)" />
      )}
    </svg>
  );
}

/** k-fold cross-validation beside the single test split: pooled value, interval, every fold. */
export function CrossValidationSection({ cv, single }: { cv: CrossValidation; single: Metrics }) {
  const titleId = useId();
  const folds = cv.folds ?? [];
  const singleValues = single as Record<string, unknown>;
  return (
    <Paper withBorder p="md" component="section" aria-labelledby={titleId} data-testid="cv-section">
      <Title order={2} size="h5" mb="xs" id={titleId}>
        Cross-validation
      </Title>
      <Text size="sm" mb="sm">
        The model was trained again by its own configuration on each of {cv.k} folds of {cv.subjects} subjects and
        tested on the subjects it left out, so every slice is predicted once by a model that never saw its subject.
        Its interval shows how much the single test split&apos;s number could owe to which subjects it happened to hold.
        {cv.note ? ` Note: ${cv.note}.` : ''}
      </Text>
      <Table.ScrollContainer minWidth={560}>
        <Table verticalSpacing={4} fz="sm" striped data-testid="cv-table">
          <Table.Caption>
            {cv.k} folds, {cv.slices} slices from {cv.subjects} subjects, grouped by subject and spread evenly within
            each source; interval: 95% bootstrap over subjects
            {cv.evaluated ? `; run ${cv.evaluated}` : ''}. In the strip, the bar is the interval, the dot the
            cross-validated value and the diamond the single split.
          </Table.Caption>
          <Table.Thead>
            <Table.Tr>
              <Table.Th scope="col">Metric</Table.Th>
              <Table.Th scope="col">Single test split</Table.Th>
              <Table.Th scope="col">Cross-validated (95% interval)</Table.Th>
              <Table.Th scope="col">Each fold</Table.Th>
              <Table.Th scope="col">On a 0–1 scale</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {Object.entries(cv.metrics).map(([name, m]) => {
              const raw = singleValues[name];
              const split = typeof raw === 'number' && Number.isFinite(raw) ? raw : null;
              return (
                <Table.Tr key={name} data-testid={`cv-row-${name}`}>
                  <Table.Th scope="row" fw={500}>
                    {formatMetricName(name)}
                  </Table.Th>
                  <Table.Td>{metricValue(name, split)}</Table.Td>
                  <Table.Td>
                    {metricValue(name, m.pooled)} ({metricValue(name, m.ci95[0])}–{metricValue(name, m.ci95[1])})
                  </Table.Td>
                  <Table.Td>{folds.map((f) => metricValue(name, f.metrics[name])).join(' · ')}</Table.Td>
                  <Table.Td>
                    <IntervalStrip single={split} pooled={m.pooled} ci={m.ci95} />
                  </Table.Td>
                </Table.Tr>
              );
            })}
          </Table.Tbody>
        </Table>
      </Table.ScrollContainer>
      {Object.keys(cv.by_source ?? {}).length > 0 && (
        <CrossValidationBySource cv={cv} single={single} />
      )}
      {cv.fold_results && (
        <Text size="xs" c="dimmed" mt="xs">
          Each fold&apos;s provenance and held-out per-slice scores are kept in the bundle&apos;s{' '}
          <code>{cv.fold_results}</code> folder.
        </Text>
      )}
    </Paper>
  );
}

/** Each source's pooled held-out value beside its value on the single test split. */
function CrossValidationBySource({ cv, single }: { cv: CrossValidation; single: Metrics }) {
  const names = Object.keys(cv.metrics);
  const perSource = (single.per_source ?? {}) as Record<string, Record<string, unknown>>;
  const splitValue = (source: string, name: string): number | null => {
    const raw = perSource[source]?.[name];
    return typeof raw === 'number' && Number.isFinite(raw) ? raw : null;
  };
  return (
    <Table.ScrollContainer minWidth={480} mt="sm">
      <Table verticalSpacing={4} fz="sm" striped data-testid="cv-source-table">
        <Table.Caption>
          By source: each source&apos;s held-out slices pooled over the folds, beside the single test split&apos;s
          value for that source.
        </Table.Caption>
        <Table.Thead>
          <Table.Tr>
            <Table.Th scope="col">Source</Table.Th>
            <Table.Th scope="col">Subjects</Table.Th>
            <Table.Th scope="col">Slices</Table.Th>
            {names.map((name) => (
              <Table.Th scope="col" key={name}>
                {formatMetricName(name)}: cross-validated (single split)
              </Table.Th>
            ))}
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {Object.entries(cv.by_source ?? {}).map(([source, values]) => (
            <Table.Tr key={source} data-testid={`cv-source-${source}`}>
              <Table.Th scope="row" fw={500}>
                {source}
              </Table.Th>
              <Table.Td>{values.subjects ?? '—'}</Table.Td>
              <Table.Td>{values.n ?? '—'}</Table.Td>
              {names.map((name) => (
                <Table.Td key={name}>
                  {metricValue(name, values[name] ?? null)} ({metricValue(name, splitValue(source, name))})
                </Table.Td>
              ))}
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
    </Table.ScrollContainer>
  );
}
