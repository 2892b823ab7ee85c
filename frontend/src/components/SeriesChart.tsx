import { Box, Group, Table, Text } from '@mantine/core';
import { useId, type MouseEvent } from 'react';
import type { StudySlice } from '../client/types.gen';
import { formatPercent } from '../lib/format';
import {
  bandX,
  CHART_FRAME,
  chartModels,
  chartX,
  chartY,
  indexAtX,
  linePath,
  runs,
  seriesByModel,
} from '../lib/studies';
import classes from './SeriesChart.module.css';

/** Colours at AA contrast on white, each with its own dash so colour is never the only cue. */
export const SERIES_STYLES = [
  { color: '#0b54a3', dash: '' },
  { color: '#a33a00', dash: '7 4' },
  { color: '#055c43', dash: '2 4' },
  { color: '#6b2c8f', dash: '10 4 2 4' },
];

export function seriesStyle(i: number) {
  return SERIES_STYLES[i % SERIES_STYLES.length] as (typeof SERIES_STYLES)[number];
}

interface SeriesChartProps {
  slices: StudySlice[];
  keySlices: number[];
  current: number;
  onSelect: (index: number) => void;
  /** Model key -> display name. */
  names: Record<string, string>;
  /** Why there is nothing to draw, when no slice was classified. */
  emptyReason?: string;
}

function summary(models: string[], data: Record<string, Array<number | null>>, names: Record<string, string>): string {
  return models
    .map((key) => {
      const values = (data[key] ?? []).map((v, i) => [v, i] as const).filter(([v]) => v !== null) as Array<
        readonly [number, number]
      >;
      if (values.length === 0) return `${names[key] ?? key}: no slices.`;
      const [maxV, maxI] = values.reduce((a, b) => (b[0] > a[0] ? b : a));
      const [minV] = values.reduce((a, b) => (b[0] < a[0] ? b : a));
      return `${names[key] ?? key}: from ${formatPercent(minV)} to ${formatPercent(maxV)}, highest on slice ${maxI + 1}.`;
    })
    .join(' ');
}

/**
 * Each model's P(AS positive) along the series as an inline SVG line chart: key slices shaded,
 * the current slice marked, a click jumps to the nearest slice. The same numbers are available
 * as a table for screen readers and keyboard users.
 */
export function SeriesChart({ slices, keySlices, current, onSelect, names, emptyReason }: SeriesChartProps) {
  const titleId = useId();
  const descId = useId();
  const models = chartModels(slices);
  const count = slices.length;
  const frame = CHART_FRAME;
  if (models.length === 0 || count === 0) {
    return (
      <Text size="sm" c="dimmed" data-testid="series-chart-empty">
        {emptyReason ?? 'No slice of this study was classified, so there is nothing to plot.'}
      </Text>
    );
  }
  const data = seriesByModel(slices, models);
  const keyRuns = runs(keySlices.filter((k) => k >= 0 && k < count));
  const ticks = [...new Set([0, Math.floor((count - 1) / 2), count - 1])];
  const onClick = (event: MouseEvent<SVGSVGElement>) => {
    const svg = event.currentTarget;
    // The drawing may be letterboxed inside the element: map the click through the SVG's own
    // transform when the browser has one, else through the element's box.
    const ctm = typeof svg.getScreenCTM === 'function' ? svg.getScreenCTM() : null;
    let x: number;
    if (ctm && typeof DOMPoint !== 'undefined') {
      x = new DOMPoint(event.clientX, event.clientY).matrixTransform(ctm.inverse()).x;
    } else {
      const rect = svg.getBoundingClientRect();
      if (rect.width <= 0) return;
      x = ((event.clientX - rect.left) / rect.width) * frame.width;
    }
    onSelect(indexAtX(x, count, frame));
  };
  const bottom = frame.height - frame.bottom;
  return (
    <Box data-testid="series-chart">
      <svg
        className={classes.chart}
        viewBox={`0 0 ${frame.width} ${frame.height}`}
        role="img"
        aria-labelledby={`${titleId} ${descId}`}
        onClick={onClick}
      >
        <title id={titleId}>Probability of AS positive along the series, per model</title>
        <desc id={descId}>
          {`${count} slices; key slices ${keySlices.length > 0 ? keySlices.map((k) => k + 1).join(', ') : 'none'} are shaded; slice ${current + 1} is marked. ${summary(models, data, names)}`}
        </desc>
        {keyRuns.map((run) => {
          const band = bandX(run, count, frame);
          return (
            <rect
              key={`${run[0]}-${run[1]}`}
              x={band.x}
              y={frame.top}
              width={band.width}
              height={bottom - frame.top}
              className={classes.keyBand}
              data-testid="chart-key-band"
            />
          );
        })}
        {[0, 0.5, 1].map((p) => (
          <g key={p}>
            <line
              x1={frame.left}
              x2={frame.width - frame.right}
              y1={chartY(p, frame)}
              y2={chartY(p, frame)}
              className={p === 0.5 ? classes.threshold : classes.grid}
            />
            <text x={frame.left - 6} y={chartY(p, frame) + 4} textAnchor="end" className={classes.tick}>
              {`${p * 100}%`}
            </text>
          </g>
        ))}
        {ticks.map((i) => (
          <text key={i} x={chartX(i, count, frame)} y={bottom + 16} textAnchor="middle" className={classes.tick}>
            {i + 1}
          </text>
        ))}
        <text x={(frame.left + frame.width - frame.right) / 2} y={frame.height - 2} textAnchor="middle" className={classes.axisTitle}>
          Slice
        </text>
        {models.map((key, m) => {
          const style = seriesStyle(m);
          return (
            <g key={key} data-testid={`chart-line-${key}`}>
              <path d={linePath(data[key] ?? [], frame)} fill="none" stroke={style.color} strokeWidth={2} strokeDasharray={style.dash || undefined} />
              {(data[key] ?? []).map((v, i) =>
                v === null ? null : (
                  <circle
                    key={i}
                    cx={chartX(i, count, frame)}
                    cy={chartY(v, frame)}
                    r={i === current ? 5 : 3}
                    fill={i === current ? style.color : '#fff'}
                    stroke={style.color}
                    strokeWidth={1.5}
                    data-index={i}
                  />
                ),
              )}
            </g>
          );
        })}
        <line
          x1={chartX(current, count, frame)}
          x2={chartX(current, count, frame)}
          y1={frame.top}
          y2={bottom}
          className={classes.cursor}
          data-testid="chart-cursor"
        />
      </svg>
      <Group gap="md" mt={4} aria-hidden>
        {models.map((key, m) => {
          const style = seriesStyle(m);
          return (
            <Group key={key} gap={6} wrap="nowrap">
              <svg width="28" height="10" aria-hidden>
                <line x1="0" x2="28" y1="5" y2="5" stroke={style.color} strokeWidth={2} strokeDasharray={style.dash || undefined} />
              </svg>
              <Text size="xs">{names[key] ?? key}</Text>
            </Group>
          );
        })}
        <Group gap={6} wrap="nowrap">
          <span className={classes.keySwatch} />
          <Text size="xs">key slices</Text>
        </Group>
        <Group gap={6} wrap="nowrap">
          <svg width="28" height="10" aria-hidden>
            <line x1="0" x2="28" y1="5" y2="5" className={classes.threshold} />
          </svg>
          <Text size="xs">50% threshold</Text>
        </Group>
      </Group>
      <details className={classes.details}>
        <summary>Chart data as a table</summary>
        <Table.ScrollContainer minWidth={360}>
          <Table verticalSpacing={2} fz="sm" data-testid="series-chart-table">
            <Table.Caption>P(AS positive) per slice and model</Table.Caption>
            <Table.Thead>
              <Table.Tr>
                <Table.Th scope="col">Slice</Table.Th>
                <Table.Th scope="col">Position</Table.Th>
                <Table.Th scope="col">Key slice</Table.Th>
                {models.map((key) => (
                  <Table.Th key={key} scope="col">
                    {names[key] ?? key}
                  </Table.Th>
                ))}
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {slices.map((s, i) => (
                <Table.Tr key={s.index} aria-current={i === current ? 'true' : undefined}>
                  <Table.Th scope="row">{i + 1}</Table.Th>
                  <Table.Td>{s.position_mm.toFixed(1)} mm</Table.Td>
                  <Table.Td>{s.key ? 'yes' : 'no'}</Table.Td>
                  {models.map((key) => (
                    <Table.Td key={key}>{formatPercent(data[key]?.[i] ?? null, 1)}</Table.Td>
                  ))}
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
      </details>
    </Box>
  );
}
