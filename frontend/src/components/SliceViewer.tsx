import {
  Alert,
  Badge,
  Group,
  Paper,
  Select,
  Skeleton,
  Slider,
  Stack,
  Switch,
  Table,
  Text,
} from '@mantine/core';
import { useQueryClient } from '@tanstack/react-query';
import { IconAlertTriangle } from '@tabler/icons-react';
import { useEffect, useId, useRef, useState, type KeyboardEvent } from 'react';
import { fetchArtifact, useArtifactUrl } from '../api/artifacts';
import type { StudySlice } from '../client/types.gen';
import { formatPercent } from '../lib/format';
import { statusColor } from '../lib/results';
import { sliceForKey, wheelPixels, wheelSteps } from '../lib/studies';
import classes from './SliceViewer.module.css';

export const VIEWER_KEYS_HELP =
  'Slice viewer. Arrow keys: previous or next slice; Page Up and Page Down: ten slices; Home and End: first and last slice.';

/** The newest non-null value, so the previous slice stays on screen while the next one loads. */
function useSteady<T>(value: T | null): T | null {
  const last = useRef<T | null>(null);
  if (value !== null) last.current = value;
  return value ?? last.current;
}

interface SliceViewerProps {
  slices: StudySlice[];
  index: number;
  onIndexChange: (index: number) => void;
  /** Model key -> display name. */
  names: Record<string, string>;
  /** Why no slice has a heatmap (explain off, outputs withheld, no key slices). */
  noHeatmapReason?: string;
}

/**
 * One slice of the series at a time with its mask and heatmap layers. Move with the slider,
 * the mouse wheel over the image, or the keyboard when the image has focus.
 */
export function SliceViewer({ slices, index, onIndexChange, names, noHeatmapReason }: SliceViewerProps) {
  const total = slices.length;
  const slice = slices[Math.min(Math.max(index, 0), total - 1)];
  const stageRef = useRef<HTMLDivElement>(null);
  const statusId = useId();
  const [showMask, setShowMask] = useState(true);
  const [showHeat, setShowHeat] = useState(true);
  const [opacity, setOpacity] = useState(60);
  const heatModels = [...new Set(slices.flatMap((s) => (s.heatmaps ?? []).map((h) => h.model)))];
  const [heatModel, setHeatModel] = useState<string | null>(heatModels[0] ?? null);
  const heat = (slice?.heatmaps ?? []).find((h) => h.model === heatModel) ?? slice?.heatmaps?.[0] ?? null;

  const base = useArtifactUrl(slice?.image_url);
  const mask = useArtifactUrl(showMask ? slice?.mask_url : null);
  const heatLayer = useArtifactUrl(showHeat && heat ? heat.heatmap_url : null);
  const baseUrl = useSteady(base.url);

  // Neighbouring slices are fetched ahead so scrolling through the series stays smooth.
  const queryClient = useQueryClient();
  useEffect(() => {
    for (const i of [index - 1, index + 1, index + 2]) {
      const url = slices[i]?.image_url;
      if (!url) continue;
      void queryClient.prefetchQuery({
        queryKey: ['artifact', url],
        queryFn: () => fetchArtifact(url),
        staleTime: Infinity,
      });
    }
  }, [index, slices, queryClient]);

  // Wheel over the image moves through the series; a non-passive listener keeps the page still.
  const indexRef = useRef(index);
  indexRef.current = index;
  const moveRef = useRef(onIndexChange);
  moveRef.current = onIndexChange;
  useEffect(() => {
    const el = stageRef.current;
    if (!el) return undefined;
    let rest = 0;
    const onWheel = (event: WheelEvent) => {
      event.preventDefault();
      const next = wheelSteps(rest, wheelPixels(event.deltaY, event.deltaMode));
      rest = next.rest;
      if (next.steps !== 0) {
        const target = Math.min(total - 1, Math.max(0, indexRef.current + next.steps));
        if (target !== indexRef.current) moveRef.current(target);
      }
    };
    el.addEventListener('wheel', onWheel, { passive: false });
    return () => el.removeEventListener('wheel', onWheel);
  }, [total]);

  const onKeyDown = (event: KeyboardEvent<HTMLDivElement>) => {
    if (event.target !== event.currentTarget || event.altKey || event.ctrlKey || event.metaKey) return;
    const next = sliceForKey(event.key, index, total);
    if (next === null) return;
    event.preventDefault();
    if (next !== index) onIndexChange(next);
  };

  if (!slice) return null;
  const outOfDomain = slice.domain ? !slice.domain.in_domain : false;
  const heatDisabledReason =
    heatModels.length === 0
      ? (noHeatmapReason ?? 'No heatmaps in this study')
      : !heat
        ? 'Heatmaps exist on the key slices only'
        : undefined;

  return (
    <Stack gap="sm">
      <Group justify="space-between" align="center" gap="xs">
        <Text fw={600} aria-live="polite" aria-atomic="true" id={statusId} data-testid="slice-label">
          Slice {index + 1} of {total}
        </Text>
        <Group gap={6}>
          <Text size="sm" c="dimmed">
            {slice.position_mm.toFixed(1)} mm
          </Text>
          {slice.key && (
            <Badge variant="light" color="clinical" data-testid="key-slice-badge">
              Key slice
            </Badge>
          )}
          {outOfDomain && (
            <Badge variant="light" color="orange" data-testid="slice-ood-badge">
              Out of domain
            </Badge>
          )}
        </Group>
      </Group>
      <Paper
        withBorder
        ref={stageRef}
        className={classes.stage}
        tabIndex={0}
        role="group"
        aria-roledescription="slice viewer"
        aria-label={VIEWER_KEYS_HELP}
        aria-describedby={statusId}
        onKeyDown={onKeyDown}
        data-testid="slice-viewer"
      >
        {baseUrl ? (
          <img
            className={classes.layer}
            src={baseUrl}
            alt={`Slice ${index + 1} of ${total}, ${slice.position_mm.toFixed(1)} mm along the series`}
          />
        ) : slice.image_url && !base.isError ? (
          <Skeleton className={classes.layer} aria-label="Loading the slice" />
        ) : (
          <Text className={classes.missing} c="gray.3" size="sm">
            This slice could not be read.
          </Text>
        )}
        {showMask && mask.url && (
          <img
            className={classes.layer}
            style={{ opacity: opacity / 100 }}
            src={mask.url}
            alt=""
            aria-hidden
            data-testid="slice-mask-layer"
          />
        )}
        {showHeat && heat && heatLayer.url && (
          <img
            className={classes.layer}
            style={{ opacity: opacity / 100 }}
            src={heatLayer.url}
            alt=""
            aria-hidden
            data-testid="slice-heatmap-layer"
          />
        )}
      </Paper>
      <Group gap="sm" wrap="nowrap" align="center">
        <Text size="sm" style={{ whiteSpace: 'nowrap' }} aria-hidden>
          Slice
        </Text>
        <Slider
          flex={1}
          min={0}
          max={Math.max(0, total - 1)}
          step={1}
          value={index}
          onChange={onIndexChange}
          label={(v) => `Slice ${v + 1}`}
          thumbLabel="Slice"
          thumbProps={{ 'aria-valuetext': `Slice ${index + 1} of ${total}` } as React.ComponentPropsWithoutRef<'div'>}
          marks={slices.filter((s) => s.key).map((s) => ({ value: slices.indexOf(s) }))}
          data-testid="slice-slider"
        />
      </Group>
      <Paper withBorder p="sm">
        <Stack gap={8} role="group" aria-label="Layers">
          <Switch
            label="Segmentation mask"
            description={slice.mask_url ? 'Structures the segmenter found on this slice' : 'Nothing segmented on this slice'}
            checked={showMask && Boolean(slice.mask_url)}
            disabled={!slice.mask_url}
            onChange={(e) => setShowMask(e.currentTarget.checked)}
            data-testid="toggle-slice-mask"
            size="sm"
          />
          <Switch
            label="Heatmap"
            description={heatDisabledReason ?? `Where ${names[heat?.model ?? ''] ?? heat?.model} looked for “${heat?.class_label}”`}
            checked={showHeat && Boolean(heat)}
            disabled={!heat}
            onChange={(e) => setShowHeat(e.currentTarget.checked)}
            data-testid="toggle-slice-heatmap"
            size="sm"
          />
          {heatModels.length > 1 && (
            <Select
              label="Heatmap model"
              data={heatModels.map((k) => ({ value: k, label: names[k] ?? k }))}
              value={heatModel}
              onChange={setHeatModel}
              allowDeselect={false}
              size="xs"
              data-testid="heatmap-model"
            />
          )}
          <Group gap="sm" wrap="nowrap" align="center">
            <Text size="sm" style={{ whiteSpace: 'nowrap' }} aria-hidden>
              Layer opacity
            </Text>
            <Slider
              flex={1}
              value={opacity}
              onChange={setOpacity}
              min={0}
              max={100}
              step={5}
              label={(v) => `${v}%`}
              thumbLabel="Layer opacity"
            />
          </Group>
        </Stack>
      </Paper>
      {slice.error && (
        <Alert color="red" variant="light" icon={<IconAlertTriangle size={18} aria-hidden />} title="This slice was left out" role="note">
          {slice.error}
        </Alert>
      )}
      {(slice.classifications ?? []).length > 0 && (
        <Table verticalSpacing={4} fz="sm" data-testid="slice-classifications">
          <Table.Caption>Model outputs on slice {index + 1}</Table.Caption>
          <Table.Thead>
            <Table.Tr>
              <Table.Th scope="col">Model</Table.Th>
              <Table.Th scope="col">P(AS positive)</Table.Th>
              <Table.Th scope="col">AS status</Table.Th>
              <Table.Th scope="col">Stage</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {(slice.classifications ?? []).map((c) => (
              <Table.Tr key={c.model}>
                <Table.Th scope="row" fw={500}>
                  {names[c.model] ?? c.model}
                </Table.Th>
                <Table.Td>{formatPercent(c.p_positive, 1)}</Table.Td>
                <Table.Td>
                  <Text span size="sm" fw={600} c={`${statusColor(c.as_status)}.9`}>
                    {c.as_status}
                  </Text>
                </Table.Td>
                <Table.Td>
                  {c.stage} ({formatPercent(c.stage_probability)})
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      )}
      {showHeat && heat && (
        <Text size="xs" c="dimmed">
          Heatmap of {names[heat.model] ?? heat.model} for “{heat.class_label}” ({formatPercent(heat.probability)})
          {heat.inside_fraction != null ? `; ${formatPercent(heat.inside_fraction)} of it inside the segmented region` : ''}
          {heat.faithfulness_score != null ? `; faithfulness score ${heat.faithfulness_score.toFixed(2)}` : ''}.
        </Text>
      )}
    </Stack>
  );
}
